"""Human approvals of capability calls.

An approval is bound to a SHA-256 hash of the exact call (`call_hash`); its parameters are kept
only as a summary with secrets redacted (JSON text), for `turret approvals` to show. Every state
change is a compare-and-set on `status`, so a decision or an execution happens at most once
even when two callers race:

    pending --decide--> approved --mark_executed--> executed
            --decide--> denied
    pending | approved --expire (at or after `expires`)--> expired

`mark_executed` is called before the call is sent (at most once: a crash between the two loses
the call rather than repeating it); `record_result` adds the upstream status afterwards. The
result body is not stored: it stays in memory for the agent's `GET /v1/approvals/{id}`.
"""

from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass
from typing import Literal

from turret.state.db import Database

Status = Literal["pending", "approved", "denied", "expired", "executed"]
_HASH = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class Approval:
    """One approval request and where it stands."""

    id: str
    call_hash: str
    agent: str
    capability: str
    params_summary: str  # JSON text, secrets redacted
    status: Status
    created: float
    expires: float
    decided_at: float | None
    approver_uid: int | None
    reason: str | None
    executed_at: float | None
    result_status: int | None


def _row(r: sqlite3.Row) -> Approval:
    return Approval(
        r["id"], r["call_hash"], r["agent"], r["capability"], r["params_summary"], r["status"],
        r["created"], r["expires"], r["decided_at"], r["approver_uid"], r["reason"],
        r["executed_at"], r["result_status"],
    )


class Approvals:
    """The approvals table."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def create(
        self, approval_id: str, *, call_hash: str, agent: str, capability: str,
        params_summary: str, created: float, expires: float,
    ) -> Approval:
        """Record a pending approval for the call hashed as `call_hash`."""
        if not _HASH.fullmatch(call_hash):
            raise ValueError("call_hash must be a SHA-256 hex digest")
        rows = self._db.execute(
            "INSERT INTO approvals (id, call_hash, agent, capability, params_summary, status,"
            " created, expires) VALUES (?, ?, ?, ?, ?, 'pending', ?, ?) RETURNING *",
            (approval_id, call_hash, agent, capability, params_summary, created, expires),
        )
        return _row(rows[0])

    def get(self, approval_id: str) -> Approval | None:
        """The approval with this id, or None."""
        rows = self._db.query(
            "SELECT * FROM approvals WHERE id = ?", (approval_id,)
        )
        return _row(rows[0]) if rows else None

    def decide(
        self, approval_id: str, *, approve: bool, approver_uid: int, at: float,
        reason: str | None = None,
    ) -> Approval | None:
        """Approve or deny a pending, unexpired approval; None if it was not pending."""
        rows = self._db.execute(
            "UPDATE approvals SET status = ?, decided_at = ?, approver_uid = ?, reason = ?"
            " WHERE id = ? AND status = 'pending' AND expires > ?"
            " RETURNING *",
            ("approved" if approve else "denied", at, approver_uid, reason, approval_id, at),
        )
        return _row(rows[0]) if rows else None

    def mark_executed(self, approval_id: str, call_hash: str, at: float) -> bool:
        """Claim an approved, unexpired approval for exactly this call; True once, then False.

        A different call (another hash) under the same approval id is never claimed.
        """
        rows = self._db.execute(
            "UPDATE approvals SET status = 'executed', executed_at = ?"
            " WHERE id = ? AND call_hash = ? AND status = 'approved' AND expires > ?"
            " RETURNING id",
            (at, approval_id, call_hash, at),
        )
        return bool(rows)

    def record_result(self, approval_id: str, result_status: int) -> None:
        """Record the HTTP status the executed call got."""
        self._db.execute(
            "UPDATE approvals SET result_status = ? WHERE id = ? AND status = 'executed'",
            (result_status, approval_id),
        )

    def expire(self, at: float) -> list[str]:
        """Expire every pending or approved approval whose time is up; return their ids."""
        rows = self._db.execute(
            "UPDATE approvals SET status = 'expired'"
            " WHERE status IN ('pending', 'approved') AND expires <= ? RETURNING id",
            (at,),
        )
        return sorted(r["id"] for r in rows)

    def pending(self) -> list[Approval]:
        """Approvals waiting for an operator, oldest first."""
        rows = self._db.query(
            "SELECT * FROM approvals WHERE status = 'pending' ORDER BY created, id"
        )
        return [_row(r) for r in rows]

    def prune(self, before: float) -> int:
        """Delete settled approvals (denied, expired, executed) created before `before`."""
        rows = self._db.execute(
            "DELETE FROM approvals WHERE status IN ('denied', 'expired', 'executed')"
            " AND created < ? RETURNING id",
            (before,),
        )
        return len(rows)
