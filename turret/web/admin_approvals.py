"""The operator's side of human approval on the admin socket: list what waits, approve, deny.

    GET  /v1/admin/approvals                 pending approvals: the exact call (capability and
                                             parameters), agent, created, expires
    POST /v1/admin/approvals/{id}/approve    {"reason": TEXT}?  (409 if not pending or expired)
    POST /v1/admin/approvals/{id}/deny       {"reason": TEXT}?

Every decision is recorded (`approval_granted`, `approval_denied`) with the operator's uid from
the connection. Approving does not perform the call: the agent's next read of the approval does
(`turret.pipeline.approval_outcome`), while its token still works. Expired approvals are ended
(and recorded) before anything is listed or decided.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from functools import partial
from typing import Protocol

from aiohttp import web

from turret import admin
from turret.approval import APPROVAL_ID, operator_doc
from turret.audit import Auditor
from turret.errors import BadRequest, Conflict, NotFound
from turret.httpserver import peer_credentials
from turret.pipeline.approvals import expire_due
from turret.records import NOTICE, Event
from turret.state import StateStore


class ApprovalsView(Protocol):
    """What these routes read of the server: its audit trail and its state store."""

    auditor: Auditor
    state: StateStore | None


VIEW = web.AppKey("approvals_view", ApprovalsView)
WALL: web.AppKey[Callable[[], float]] = web.AppKey("approvals_wall")  # expiry's clock


def add_routes(app: web.Application, view: ApprovalsView) -> None:
    """The approval routes of the admin app over `view` (the `Gateway`)."""
    app[VIEW] = view
    app[WALL] = time.time
    app.router.add_get("/v1/admin/approvals", _list)
    app.router.add_post("/v1/admin/approvals/{id}/approve", _approve)
    app.router.add_post("/v1/admin/approvals/{id}/deny", _deny)


def _store(request: web.Request) -> tuple[StateStore, float]:
    """The store with every due approval expired first, and the time it was done at."""
    view, now = request.app[VIEW], request.app[WALL]()
    state = admin.store_of(view.state)
    expire_due(state, view.auditor, now)
    return state, now


async def _list(request: web.Request) -> web.Response:
    state, _ = _store(request)
    return web.json_response({"approvals": [operator_doc(a) for a in state.approvals.pending()]})


async def _approve(request: web.Request) -> web.Response:
    return await _decide(request, approve=True)


async def _deny(request: web.Request) -> web.Response:
    return await _decide(request, approve=False)


async def _decide(request: web.Request, *, approve: bool) -> web.Response:
    approval_id = request.match_info["id"]
    if not APPROVAL_ID.fullmatch(approval_id):
        raise BadRequest(f"an approval id matches {APPROVAL_ID.pattern}")
    reason = await _reason(request, "approved by an operator" if approve else "denied")
    creds = peer_credentials(request.transport)
    if creds is None:  # the connection check let it in, so this is a closed connection
        raise BadRequest("no peer credentials")
    state, now = _store(request)
    decided = await asyncio.to_thread(
        partial(state.approvals.decide, approve=approve, approver_uid=creds.uid, reason=reason),
        approval_id,
        at=now,
    )
    if decided is None:
        found = state.approvals.get(approval_id)
        if found is None:
            raise NotFound("no such approval")
        raise Conflict(f"approval {approval_id} is {found.status}, not pending")
    what = "approved" if approve else "denied"
    request.app[VIEW].auditor.record(
        Event.APPROVAL_GRANTED if approve else Event.APPROVAL_DENIED,
        f"approval {approval_id}: {decided.agent} {decided.capability} {what} by uid {creds.uid}",
        {
            "TURRET_APPROVAL_ID": approval_id,
            "TURRET_AGENT": decided.agent,
            "TURRET_CAPABILITY": decided.capability,
            "TURRET_OPERATOR_UID": creds.uid,
            "TURRET_REASON": reason,
        },
        priority=NOTICE,
    )
    return web.json_response({"approval": operator_doc(decided)})


async def _reason(request: web.Request, default: str) -> str:
    return admin.reason_from_body(await request.read(), default)
