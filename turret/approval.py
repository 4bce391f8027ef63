"""Human approval, pure: approval ids, the hash that binds an approval to one exact call, what
the operator is told, and the documents the agent and the operator read. No I/O.

An approval is bound to `call_hash(agent, token id, capability, parameters)`: only a request of
the same agent with the same token (a configured token, or the same derived token) finds it, and
only that call is ever performed under it. Its parameters are kept in the state store as their
canonical JSON (they passed the exfiltration guard before the approval was created, so they
hold no credential and no agent token).
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from turret.model import JSON, ParamValue
from turret.tokens import rfc3339

if TYPE_CHECKING:
    from turret.state import Approval

# "apr_" and 24 url-safe characters (144 bits): never the shape of an agent token (`turret_`).
APPROVAL_ID = re.compile(r"apr_[A-Za-z0-9_-]{24}")
MAX_WAIT = 60  # seconds a `GET /v1/approvals/{id}?wait=` may hold the request
CONFIGURED = "-"  # the token id of a configured agent token, in the call hash


def new_approval_id() -> str:
    """A fresh, unguessable approval id."""
    return "apr_" + secrets.token_urlsafe(18)


def canonical_params(params: Mapping[str, ParamValue]) -> str:
    """The parameters as canonical JSON text: sorted keys, no spaces, ASCII."""
    return json.dumps(dict(params), sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def call_hash(
    agent: str, token_id: str | None, capability: str, params: Mapping[str, ParamValue]
) -> str:
    """SHA-256 (hex) of the exact call: who (agent and token), what, with which parameters."""
    call = {
        "agent": agent,
        "token": token_id or CONFIGURED,
        "capability": capability,
        "params": json.loads(canonical_params(params)),
    }
    text = json.dumps(call, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode()).hexdigest()


def stored_params(approval: Approval) -> dict[str, ParamValue]:
    """The parameters an approval was asked for (as the store keeps them)."""
    value: dict[str, ParamValue] = json.loads(approval.params_summary)  # an object: we wrote it
    return value


def wait_seconds(raw: str | None) -> float | None:
    """`?wait=`: whole seconds from 0, at most `MAX_WAIT` (more is cut to it); None if it is
    not a number of seconds."""
    if raw is None:
        return 0.0
    if not raw.isascii() or not raw.isdigit() or len(raw) > 6:
        return None
    return float(min(int(raw), MAX_WAIT))


def notify_message(approval: Approval) -> str:
    """What the operator is told: who asks for what, until when, and how to answer (the
    parameters are not in it: they are shown on the admin socket only)."""
    return (
        f"Turret: {approval.agent} asks to call {approval.capability} "
        f"(approval {approval.id}, until {rfc3339(approval.expires)}). "
        f"See `turret approvals`, then `turret approve {approval.id}` or "
        f"`turret deny {approval.id}`."
    )


def operator_doc(approval: Approval) -> dict[str, JSON]:
    """One approval as `turret approvals` shows it: the exact call and where it stands."""
    return {
        "id": approval.id,
        "agent": approval.agent,
        "capability": approval.capability,
        "params": json.loads(approval.params_summary),
        "status": approval.status,
        "created": rfc3339(approval.created),
        "expires_at": rfc3339(approval.expires),
        "decided_at": None if approval.decided_at is None else rfc3339(approval.decided_at),
        "approver_uid": approval.approver_uid,
        "reason": approval.reason,
        "result_status": approval.result_status,
    }


def agent_doc(approval: Approval) -> dict[str, JSON]:
    """Where an approval stands, as its agent reads it: `pending`, `denied` (with the
    operator's reason), `expired`, or `done` (an executed call)."""
    status = {"executed": "done", "approved": "pending"}.get(approval.status, approval.status)
    doc: dict[str, JSON] = {
        "approval_id": approval.id,
        "status": status,
        "expires_at": rfc3339(approval.expires),
    }
    if approval.status == "denied":
        doc["reason"] = approval.reason
    if approval.status == "executed":
        doc["result_status"] = approval.result_status
    return doc


@dataclass(frozen=True)
class Outcome:
    """What an executed call answered: a result (status 200) or an error's status, code and
    message, as a direct call would have answered."""

    status: int
    result: JSON = None
    code: str = ""
    message: str = ""


class Outcomes:
    """The answers of executed calls, kept in memory (a bounded number, oldest dropped) so the
    agent can read one again; the store keeps only the status."""

    def __init__(self, limit: int = 1000) -> None:
        self._limit = limit
        self._kept: OrderedDict[str, Outcome] = OrderedDict()

    def keep(self, approval_id: str, outcome: Outcome) -> None:
        """Remember `outcome` for `approval_id`."""
        self._kept[approval_id] = outcome
        while len(self._kept) > self._limit:
            self._kept.popitem(last=False)

    def get(self, approval_id: str) -> Outcome | None:
        """The outcome kept for `approval_id`, or None."""
        return self._kept.get(approval_id)
