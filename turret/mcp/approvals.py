"""A tool call Turret holds for human approval: the bridge waits for the decision.

Turret answers such a call 202 with an approval id; the bridge then reads
`GET /v1/approvals/{id}?wait=N` again and again (each at most `POLL_WAIT` seconds) for at most
`Features.approval_wait` seconds in all, reporting progress to the client after each read (the
SDK's progress API; nothing is sent when the client asked for no progress). Turret performs the
call on the read that follows the operator's approval, so the last answer is the call's result,
or the operator's refusal, or the expiry.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import mcp_types as types

from turret.mcp.client import Answer, TurretClient
from turret.mcp.tools import capability_result, error_result, refusal

POLL_WAIT = 5  # seconds per read, and between progress reports
Progress = Callable[[float, float | None, str | None], Awaitable[None]]


def pending_approval(answer: Answer) -> str | None:
    """The approval id of a 202 `{"ok": true, "pending": {"approval_id": ...}}`, else None."""
    payload = answer.json() if answer.status == 202 else None
    pending = payload.get("pending") if isinstance(payload, dict) else None
    approval_id = pending.get("approval_id") if isinstance(pending, dict) else None
    return approval_id if isinstance(approval_id, str) else None


async def wait_for_approval(
    client: TurretClient, token: str, approval_id: str, bound: float, progress: Progress
) -> types.CallToolResult:
    """Wait up to `bound` seconds for the decision on `approval_id`; the call's outcome."""
    started = time.monotonic()
    while True:
        left = bound - (time.monotonic() - started)
        wait = max(1, min(POLL_WAIT, int(left)))
        answer = await client.request(
            "GET", f"/v1/approvals/{approval_id}", token, query={"wait": str(wait)}
        )
        status = _status(answer)
        if status != "pending":
            return _outcome(answer, status, approval_id)
        waited = time.monotonic() - started
        if waited >= bound:
            return error_result(
                f"no decision on approval {approval_id} within {bound:g} s; it stays pending "
                "until it expires",
                {"code": "approval_pending", "approval_id": approval_id},
            )
        await progress(waited, bound, f"waiting for an operator to approve {approval_id}")


def _status(answer: Answer) -> str | None:
    payload = answer.json()
    approval = payload.get("approval") if isinstance(payload, dict) else None
    status = approval.get("status") if isinstance(approval, dict) else None
    return status if answer.status == 200 and isinstance(status, str) else None


def _outcome(answer: Answer, status: str | None, approval_id: str) -> types.CallToolResult:
    if status == "done":
        return capability_result(answer)
    if status == "denied":
        approval: dict[str, Any] = answer.json()["approval"]
        reason = approval.get("reason") or "no reason given"
        return error_result(
            f"an operator denied this call (approval {approval_id}): {reason}",
            {"code": "approval_denied", "approval_id": approval_id, "reason": reason},
        )
    if status == "expired":
        return error_result(
            f"no one approved this call in time (approval {approval_id} expired)",
            {"code": "approval_expired", "approval_id": approval_id},
        )
    return refusal(answer)  # Turret's refusal of the read or of performing the call
