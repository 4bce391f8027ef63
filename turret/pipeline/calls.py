"""The capability API, in the order its checks run: list, call, explain.

A call: authenticate and charge the rate → find the capability → if its name alone decides
(a deny rule, no grant) refuse before reading the body → read, parse and check the parameters →
decide → 403 if denied → the exfiltration guard (only for a call the agent may make: the one
inherent oracle, SECURITY.md) → record the decision (before anything is sent; a lost record is a
503) → fill in the request, send it, project and redact the answer → record the outcome.

No answer quotes what the agent sent (a name it gave, a parameter name): quoted, and scrubbed, it
would tell a secret from a guess.
"""

from __future__ import annotations

from typing import Any

from turret.capabilities.engine import audit_fields, call_result, outbound_for
from turret.capabilities.schema import capability_schema, validate_params
from turret.capabilities.strictjson import MAX_BODY_BYTES, parse_object, searchable, shown_key
from turret.errors import (
    BadRequest,
    Forbidden,
    NotFound,
    PolicyDenied,
    RequestError,
    UnprocessableEntity,
)
from turret.model import JSON, METHODS, Agent, Capability, CapabilityAction, Params, ProxyAction
from turret.paths import canonical_path
from turret.pipeline.approvals import approval_of, hold
from turret.pipeline.opa import consult
from turret.pipeline.proxy import proxy_reason
from turret.pipeline.request import (
    Context,
    Exchange,
    Flow,
    Incoming,
    Reply,
    admit,
    begin,
    refuse_secret_body,
)
from turret.policy import (
    Decision,
    Result,
    capability_grants,
    decide,
    decide_capability,
    denied_by_name,
)
from turret.principal import Principal
from turret.runtime import Runtime

CALL_PREFIX = "/v1/capabilities/"
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789_.-")


def visible(agent: Agent, capabilities: dict[str, Capability]) -> list[dict[str, Any]]:
    """The capabilities `agent` may use, each with a JSON Schema narrowed by its grants."""
    out = []
    for name, cap in sorted(capabilities.items()):
        grants = list(capability_grants(agent, name))
        if not grants or denied_by_name(agent, name):
            continue
        schema = capability_schema(cap, [dict(g.params) for g in grants])
        entry = {
            "name": name,
            "description": cap.description,
            "service": cap.service,
            "parameters": schema,
        }
        approval = approval_of(grants)
        if approval is not None:
            entry["approval"] = approval
        out.append(entry)
    return out


async def listing(ctx: Context, incoming: Incoming) -> Reply:
    """`GET /v1/capabilities`: tool definitions for what this agent may call."""
    flow = begin(ctx, incoming, "/v1/capabilities")
    principal = await admit(flow)
    flow.audit.decision(Decision.allow("list capabilities"), 200)
    capabilities = visible(principal.agent, dict(flow.runtime.config.capabilities))
    return Reply(200, {"ok": True, "capabilities": capabilities})


async def call(ctx: Context, incoming: Incoming, io: Exchange) -> Reply:
    """`POST /v1/capabilities/{name}` with the parameters as a JSON object."""
    # The raw target, not the router's decoded copy, names the capability: no %-escapes.
    raw_name = incoming.path.removeprefix(CALL_PREFIX)
    flow = begin(ctx, incoming, CALL_PREFIX + raw_name)
    audit = flow.audit
    audit.fields["TURRET_CAPABILITY"] = raw_name
    principal = await admit(flow)
    try:
        capability = _capability(flow.runtime, raw_name)
        decision, params, seen = await _decide_call(flow, principal, capability, io)
    except RequestError as exc:
        audit.refused(exc)
        raise
    held = decision.result is Result.APPROVAL
    if not decision.allowed and not held:
        audit.decision(decision, 403)
        raise Forbidden(decision.reason)  # built from the config: names, rules, constraints
    try:
        await refuse_secret_body(flow, seen)
        action = CapabilityAction(capability, params)
        external = await consult(flow, principal, action, decision)
    except RequestError as exc:
        audit.refused(exc)
        raise
    if external is not None:
        audit.decision(external.decision, 403)
        raise PolicyDenied(external.message)
    if held:
        return await hold(flow, principal, CapabilityAction(capability, params), decision, io)
    audit.decision(decision)
    return await perform(flow, principal, capability, params, io)


async def perform(
    flow: Flow, principal: Principal, capability: Capability, params: Params, io: Exchange
) -> Reply:
    """Send a decided, recorded call and answer with its result; the outcome is recorded."""
    runtime, audit = flow.runtime, flow.audit
    service = runtime.config.services[capability.service]
    try:
        with flow.ctx.limiter.slot(principal.name, principal.agent.limits, spend=False):
            out = outbound_for(capability, params, service)
            call = CapabilityAction(capability, params)
            response = await io.forward(runtime, service, out, call=call, audit=audit)
            done = call_result(capability, out, response, runtime.redactor)
    except RequestError as exc:
        audit.outcome(exc.status, exc.reason, {})
        raise
    reason = "echo guard redacted credential material" if done.redactions else "done"
    audit.outcome_of_action(
        done.status,
        reason,
        {
            "TURRET_BYTES_IN": done.bytes_in,
            "TURRET_BYTES_OUT": done.bytes_out,
            "TURRET_REDACTIONS": done.redactions or None,
        },
    )
    return Reply(200, {"ok": True, "result": done.result})


async def explain(ctx: Context, incoming: Incoming, io: Exchange) -> Reply:
    """`POST /v1/explain` with `{capability, params}` or `{service, method, path}`: the decision
    and its reason, without acting."""
    flow = begin(ctx, incoming, "/v1/explain")
    principal = await admit(flow)
    try:
        raw = await io.body(MAX_BODY_BYTES, flow.runtime.config.limits.body_timeout)
        # Recorded fields may come from it, decoded: params, a path, a name quoted in an error.
        flow.audit.scrub.look_at(searchable(raw))
        decision, reason = _explained(flow, principal, _parsed(raw))
    except RequestError as exc:
        flow.audit.refused(exc)
        raise
    flow.audit.decision(Decision.allow(f"explain only: {decision.reason}", decision.rule), 200)
    answer = {
        "allowed": decision.allowed,
        "reason": reason,
        "rule": decision.rule,
        "report_only": decision.would_deny,
        "approval_required": decision.result is Result.APPROVAL,
    }
    return Reply(200, {"ok": True, "decision": answer})


def _capability(runtime: Runtime, name: str) -> Capability:
    if not name or not set(name) <= _NAME_CHARS:
        raise BadRequest("capability names match [a-z0-9_.-]")
    capability = runtime.config.capabilities.get(name)
    if capability is None:
        raise NotFound("no such capability", reason=f"no capability {name!r}")
    return capability


def _decided_by_name(agent: Agent, capability: Capability) -> Decision | None:
    """The denial when the capability's name alone decides it (a deny rule, no grant): its
    parameters are then not even read, so the answer cannot depend on them."""
    if denied_by_name(agent, capability.name) or not any(capability_grants(agent, capability.name)):
        decision = decide_capability(agent, capability, {})
        return None if decision.allowed else decision  # report mode goes on to the parameters
    return None


def _parsed(raw: bytes) -> dict[str, JSON]:
    try:
        return parse_object(raw)
    except BadRequest as exc:
        # The parser may quote a key (a duplicate): the answer stops before the quotation.
        exc.message = exc.message.split("'", 1)[0].split('"', 1)[0].rstrip(" :")
        raise


def _checked(capability: Capability, raw: dict[str, JSON]) -> Params:
    """`validate_params`, with unknown parameter names refused first without quoting them: a
    name is the agent's input, as a value is."""
    unknown = sorted(shown_key(k) for k in raw if capability.param(k) is None)
    if unknown:
        names = ", ".join(p.name for p in capability.params) or "none"
        raise UnprocessableEntity(
            f"params: unknown parameter name; {capability.name} takes {names}",
            reason=f"params: unknown parameter names {', '.join(unknown)}",
        )
    return validate_params(capability, raw)


async def _decide_call(
    flow: Flow, principal: Principal, capability: Capability, io: Exchange
) -> tuple[Decision, Params, bytes]:
    """The decision on a call, its checked parameters, and the body as the guards search it."""
    denied = _decided_by_name(principal.agent, capability)
    if denied is not None:
        return denied, {}, b""
    raw = await io.body(MAX_BODY_BYTES, flow.runtime.config.limits.body_timeout)
    # Searched as sent and as decoded: a JSON escape ("\\u0074urret_...") hides a secret from
    # the bytes, not from a parameter or a name quoted in a record.
    seen = searchable(raw)
    flow.audit.scrub.look_at(seen)  # recorded fields may come from it: params, a path
    params = _checked(capability, _parsed(raw))
    flow.audit.fields.update(audit_fields(capability, params, flow.runtime.params_key))
    action = CapabilityAction(capability, params)
    return decide(principal, action, flow.runtime.config.services), params, seen


def _explained(flow: Flow, principal: Principal, body: dict[str, JSON]) -> tuple[Decision, str]:
    """The decision, and its reason as the agent is told it (quoting nothing it sent)."""
    runtime, audit = flow.runtime, flow.audit
    if "capability" in body:
        _only(body, {"capability", "params"})
        name, params = body["capability"], body.get("params", {})
        if not isinstance(name, str) or not isinstance(params, dict):
            raise UnprocessableEntity("capability must be a name and params an object")
        capability = _capability(runtime, name)
        audit.fields["TURRET_CAPABILITY"] = name
        decision = _decided_by_name(principal.agent, capability)
        if decision is None:
            checked = _checked(capability, params)
            audit.fields.update(audit_fields(capability, checked, runtime.params_key))
            action = CapabilityAction(capability, checked)
            decision = decide(principal, action, runtime.config.services)
        return decision, decision.reason
    _only(body, {"service", "method", "path"})
    service, method, path = body.get("service"), body.get("method"), body.get("path")
    known = isinstance(method, str) and method in METHODS  # a list or object is unhashable
    if not isinstance(service, str) or not known or not isinstance(path, str):
        raise UnprocessableEntity(
            "give {capability, params} or {service, method, path} with a known method"
        )
    audit.fields["TURRET_SERVICE"] = service
    canonical = canonical_path(path.partition("?")[0])
    asked = ProxyAction(service, str(method), canonical)
    decision = decide(principal, asked, runtime.config.services)
    return decision, proxy_reason(decision)


def _only(body: dict[str, JSON], keys: set[str]) -> None:
    unknown = sorted(shown_key(key) for key in body.keys() - keys)
    if unknown:
        raise UnprocessableEntity(
            f"unknown key; expected {', '.join(sorted(keys))}",
            reason=f"unknown keys {', '.join(unknown)}",
        )
