"""`GET /v1/approvals/{id}[?wait=SECONDS]`: where a held call stands, and its performing.

Only the request that could have made the call finds its approval: the same agent with the same
token (the call hash must match); any other gets the 404 an unknown id gets, so an id is no
oracle. `?wait=` holds the request (at most `MAX_WAIT` seconds) while the approval is pending.

An approved call is performed by the first such request after the approval (the MCP bridge's
wait is one), so it is performed only while the token that asked still works: a seal, a
revocation, an expired or used-up token refuse the request before the approval is looked at,
and the call is never made. The call is decided again on the current configuration (and the
token's scope) and passes the exfiltration guard again; then the approval is claimed for exactly
that call hash (once: a second request finds it done) and the call is sent. Its answer is kept
in memory for a later read; after a restart only its status is known.
"""

from __future__ import annotations

import asyncio
import hmac
from typing import TYPE_CHECKING

from turret.approval import (
    APPROVAL_ID,
    MAX_WAIT,
    Outcome,
    agent_doc,
    call_hash,
    canonical_params,
    stored_params,
    wait_seconds,
)
from turret.capabilities.engine import audit_fields
from turret.capabilities.schema import validate_params
from turret.errors import BadRequest, Forbidden, NotFound, PolicyDenied, RequestError
from turret.model import Capability, CapabilityAction, Params
from turret.pipeline.approvals import expire_due
from turret.pipeline.calls import perform
from turret.pipeline.opa import consult
from turret.pipeline.request import Context, Exchange, Flow, Incoming, Reply, admit, begin
from turret.pipeline.request import refuse_secret_body as refuse_secrets_in
from turret.policy import Decision, Result, decide
from turret.principal import Principal
from turret.records import NOTICE, Event

if TYPE_CHECKING:
    from turret.state import Approval, StateStore

PREFIX = "/v1/approvals/"
POLL_EVERY = 0.2  # seconds between looks at the store while a request waits
_NO_SUCH = "no such approval"


async def read(
    ctx: Context, incoming: Incoming, io: Exchange, *, raw_id: str, raw_wait: str | None
) -> Reply:
    """The approval's status, waiting up to `?wait=` seconds while it is pending; an approved
    call is performed now and its result answered."""
    shown = raw_id if APPROVAL_ID.fullmatch(raw_id) else "-"
    flow = begin(ctx, incoming, PREFIX + shown)
    principal = await admit(flow)
    try:
        wait = wait_seconds(raw_wait)
        if wait is None:
            raise BadRequest("wait must be a whole number of seconds")
        approval = await _waited(flow, _owned(flow, principal, raw_id), wait)
    except RequestError as exc:
        flow.audit.refused(exc)
        raise
    flow.audit.fields.update(TURRET_APPROVAL_ID=approval.id, TURRET_CAPABILITY=approval.capability)
    if approval.status == "approved":
        return await _perform(flow, principal, approval, io)
    flow.audit.decision(Decision.allow(f"approval {approval.status}"), 200)
    return _answer(flow, approval)


def _owned(flow: Flow, principal: Principal, raw_id: str) -> Approval:
    """The approval `raw_id` if this very token asked for it; else `NotFound`, as for an id
    that does not exist."""
    state = flow.ctx.state
    found = state.approvals.get(raw_id) if state and APPROVAL_ID.fullmatch(raw_id) else None
    if found is None or found.agent != principal.name:
        raise NotFound(_NO_SUCH, reason=f"{_NO_SUCH} for this agent")
    digest = call_hash(principal.name, principal.token_id, found.capability, stored_params(found))
    if not hmac.compare_digest(digest, found.call_hash):
        raise NotFound(_NO_SUCH, reason=f"approval {found.id} is another token's")
    return found


async def _waited(flow: Flow, approval: Approval, wait: float) -> Approval:
    """The approval once it is settled, or as it is after `wait` seconds."""
    state = _store(flow)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    while True:
        if approval.status in ("pending", "approved") and flow.ctx.wall() >= approval.expires:
            expire_due(state, flow.ctx.auditor, flow.ctx.wall())
        approval = state.approvals.get(approval.id) or approval
        left = deadline - loop.time()
        if not _unsettled(flow, approval) or left <= 0:
            return approval
        # A decision comes from another app (the admin socket) through the store: looked for.
        await asyncio.sleep(min(POLL_EVERY, left))


def _unsettled(flow: Flow, approval: Approval) -> bool:
    """Pending, or being performed by another request (claimed, its answer not in yet)."""
    if approval.status == "pending":
        return True
    performing = approval.status == "executed" and approval.result_status is None
    return performing and flow.ctx.outcomes.get(approval.id) is None


def _store(flow: Flow) -> StateStore:
    assert flow.ctx.state is not None  # noqa: S101 - `_owned` found the approval in it
    return flow.ctx.state


def _answer(flow: Flow, approval: Approval) -> Reply:
    """Pending, denied, expired; or done, with the answer kept from when it was performed."""
    doc = agent_doc(approval)
    kept = flow.ctx.outcomes.get(approval.id) if approval.status == "executed" else None
    if kept is not None and kept.status != 200:
        error = RequestError(kept.message)
        error.status, error.code = kept.status, kept.code
        raise error
    body: dict[str, object] = {"ok": True, "approval": doc}
    if kept is not None:
        body["result"] = kept.result
    return Reply(200, body)


async def _perform(flow: Flow, principal: Principal, approval: Approval, io: Exchange) -> Reply:
    """Decide the approved call again, claim the approval for its hash, and send it."""
    try:
        capability, params, decision = _decided_again(flow, principal, approval)
        await refuse_secrets_in(flow, canonical_params(params).encode())
        approved = Decision(Result.ALLOW, f"approved: {decision.reason}", decision.rule)
        # The external policy is asked again at the moment of performing: it may have changed.
        external = await consult(flow, principal, CapabilityAction(capability, params), approved)
        if external is not None:
            raise PolicyDenied(external.message, reason=external.decision.reason)
    except RequestError as exc:
        _refused(flow, approval, exc)
        raise
    flow.audit.decision(approved)
    state, now = _store(flow), flow.ctx.wall()
    claim = state.approvals.mark_executed
    if not await asyncio.to_thread(claim, approval.id, approval.call_hash, now):
        # Another request claimed it first (answered once that one has its answer), or its
        # time ran out.
        return _answer(flow, await _waited(flow, approval, float(MAX_WAIT)))
    try:
        reply = await perform(flow, principal, capability, params, io)
    except RequestError as exc:
        _executed(flow, approval, Outcome(exc.status, code=exc.code, message=exc.message))
        raise
    result = reply.json.get("result") if isinstance(reply.json, dict) else None
    _executed(flow, approval, Outcome(200, result))
    doc = {**agent_doc(approval), "status": "done", "result_status": 200}
    return Reply(200, {"ok": True, "approval": doc, "result": result})


def _decided_again(
    flow: Flow, principal: Principal, approval: Approval
) -> tuple[Capability, Params, Decision]:
    """The approved call as the current configuration reads it, and its decision now; refused
    if the capability went, its parameters would now mean another call, or no grant allows it."""
    runtime = flow.runtime
    capability = runtime.config.capabilities.get(approval.capability)
    if capability is None:
        raise Forbidden(
            "the approved call is no longer possible",
            reason=f"capability {approval.capability} no longer configured",
        )
    params = validate_params(capability, stored_params(approval))
    if canonical_params(params) != approval.params_summary:
        raise Forbidden(
            "the approved call is no longer possible",
            reason="the capability's parameters changed since the approval",
        )
    flow.audit.fields.update(audit_fields(capability, params, runtime.params_key))
    decision = decide(principal, CapabilityAction(capability, params), runtime.config.services)
    if not decision.allowed and decision.result is not Result.APPROVAL:
        raise Forbidden(decision.reason)
    return capability, params, decision


def _refused(flow: Flow, approval: Approval, exc: RequestError) -> None:
    flow.audit.refused(exc)
    flow.audit.event(
        Event.APPROVAL_REFUSED,
        f"approval {approval.id}: the approved call was not performed: {exc.reason}",
        {"TURRET_REASON": exc.reason},
        priority=NOTICE,
    )


def _executed(flow: Flow, approval: Approval, outcome: Outcome) -> None:
    """Keep the answer, store its status, record `approval_executed`."""
    flow.ctx.outcomes.keep(approval.id, outcome)
    _store(flow).approvals.record_result(approval.id, outcome.status)
    flow.audit.event(
        Event.APPROVAL_EXECUTED,
        f"approval {approval.id}: {approval.capability} performed, {outcome.status}",
        {"TURRET_STATUS": outcome.status, "TURRET_ERROR": outcome.code or None},
        priority=NOTICE,
    )
