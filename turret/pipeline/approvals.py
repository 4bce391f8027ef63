"""A call held for a person: the approval is created, the operator told, the agent answered 202.

`hold` runs where a call would be sent: the call was decided (`Result.APPROVAL`), its
parameters checked and passed the exfiltration guard. Nothing goes upstream: the decision and
`approval_requested` are recorded, the approval is stored (bound to the call's hash), and the
operator is told through `approvals.notify` as Turret itself (a failure is recorded as
`approval_notify_failed`; the approval stays pending). `expire_due` ends every approval whose
time is up, with `approval_expired` for each; the readers (the agent's `GET`, the admin
commands, the pruner) call it first, so an expired approval is never approved or performed.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from turret.approval import (
    call_hash,
    canonical_params,
    new_approval_id,
    notify_message,
)
from turret.capabilities.engine import call_result, outbound_for
from turret.capabilities.schema import validate_params
from turret.config.approvals import MESSAGE_PARAM
from turret.errors import RequestError, ServiceUnavailable
from turret.model import CapabilityAction, CapabilityGrant
from turret.pipeline.request import Context, Exchange, Flow, Reply
from turret.policy import Decision
from turret.principal import Principal
from turret.records import NOTICE, WARNING, Event, Recorder
from turret.tokens import rfc3339

if TYPE_CHECKING:
    from turret.state import Approval, StateStore


def approval_of(grants: list[CapabilityGrant]) -> str | None:
    """What a listing says of a capability's approval: `required` (every call waits for a
    person), `conditional` (some calls may), or None."""
    rules = [g.approval for g in grants]
    if rules and all(r is not None and r.when is None for r in rules):
        return "required"
    return "conditional" if any(r is not None for r in rules) else None


async def hold(
    flow: Flow, principal: Principal, action: CapabilityAction, decision: Decision, io: Exchange
) -> Reply:
    """Hold the call for approval: 202 with the approval id and when it expires."""
    capability, params = action.capability, action.params
    state, audit = flow.ctx.state, flow.audit
    if state is None:
        # Without a store there is nowhere to keep the approval: refused, never let through.
        exc = ServiceUnavailable(
            "this call needs approval, and approvals need a state directory",
            reason="approval required but no state store",
        )
        audit.refused(exc)
        raise exc
    now = flow.ctx.wall()
    expires = now + flow.runtime.config.approvals.ttl
    approval_id = new_approval_id()
    audit.fields["TURRET_APPROVAL_ID"] = approval_id
    audit.decision(decision, 202)  # before anything is stored or sent: a lost record is a 503
    audit.event(
        Event.APPROVAL_REQUESTED,
        f"{principal.name}: {capability.name} held for approval {approval_id}",
        {"TURRET_EXPIRES": rfc3339(expires)},
        priority=NOTICE,
    )
    approval = await asyncio.to_thread(
        state.approvals.create,
        approval_id,
        call_hash=call_hash(principal.name, principal.token_id, capability.name, params),
        agent=principal.name,
        capability=capability.name,
        params_summary=canonical_params(params),
        created=now,
        expires=expires,
    )
    await notify(flow, approval, io)
    pending = {"approval_id": approval_id, "expires_at": rfc3339(expires)}
    return Reply(202, {"ok": True, "pending": pending})


async def notify(flow: Flow, approval: Approval, io: Exchange) -> None:
    """Tell the operator through `approvals.notify`, as Turret itself (no agent's grant is
    asked); a failure is recorded and the approval stays pending."""
    runtime = flow.runtime
    settings = runtime.config.approvals
    capability = runtime.config.capabilities.get(settings.notify or "")
    if capability is None:
        return
    try:
        raw = {**dict(settings.notify_params), MESSAGE_PARAM: notify_message(approval)}
        params = validate_params(capability, raw)
        service = runtime.config.services[capability.service]
        out = outbound_for(capability, params, service)
        call_result(capability, out, await io.forward(runtime, service, out), runtime.redactor)
    except RequestError as exc:
        flow.audit.event(
            Event.APPROVAL_NOTIFY_FAILED,
            f"approval {approval.id}: telling the operator through {capability.name} failed",
            {"TURRET_NOTIFY": capability.name, "TURRET_REASON": exc.reason},
            priority=WARNING,
        )


def expire_due(state: StateStore, auditor: Recorder, now: float) -> list[str]:
    """End every pending or approved approval whose time is up; `approval_expired` for each."""
    expired = state.approvals.expire(now)
    for approval_id in expired:
        approval = state.approvals.get(approval_id)
        auditor.record(
            Event.APPROVAL_EXPIRED,
            f"approval {approval_id} expired",
            {
                "TURRET_APPROVAL_ID": approval_id,
                "TURRET_AGENT": approval.agent if approval else None,
                "TURRET_CAPABILITY": approval.capability if approval else None,
            },
            priority=NOTICE,
        )
    return expired


KEEP_SETTLED = 7 * 86400.0  # seconds a decided, expired or performed approval stays listed


def prune_approvals(ctx: Context) -> None:
    """Expire what is due (audited) and forget approvals settled a week ago: two indexed
    statements every few minutes, on the loop, where the records are written from."""
    if ctx.state is None:
        return
    now = ctx.wall()
    expire_due(ctx.state, ctx.auditor, now)
    ctx.state.approvals.prune(now - KEEP_SETTLED)
