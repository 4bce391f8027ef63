"""The capability API: list what the agent may use, call a capability, explain a decision.

Every request is authenticated and audited like the proxy: the decision is recorded before
anything is sent upstream, and a lost audit record stops the call (503, nothing forwarded).

No oracle: a call is decided before its parameters are searched for secrets, so a denied call is
answered the same whatever it carries, and no answer quotes what the agent sent (a name it gave,
a parameter name) - quoted, and scrubbed, it would tell a secret from a guess.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from turret.app import (
    LIMITER,
    RUNTIME,
    UPSTREAMS,
    Audit,
    authenticate,
    proxy_reason,
    read_body,
    refuse_secret_body,
    request_audit,
)
from turret.capabilities.engine import audit_fields, run_capability
from turret.capabilities.schema import capability_schema, validate_params
from turret.capabilities.strictjson import MAX_BODY_BYTES, parse_object, searchable, shown_key
from turret.errors import BadRequest, Forbidden, NotFound, RequestError, UnprocessableEntity
from turret.login import LOGINS, LoginSessions
from turret.model import JSON, METHODS, Agent, Capability, Params
from turret.paths import canonical_path
from turret.policy import (
    Decision,
    capability_grants,
    decide_capability,
    decide_proxy,
    denied_by_name,
)
from turret.runtime import Runtime

CALL_PREFIX = "/v1/capabilities/"
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789_.-")


def add_capability_routes(app: web.Application) -> None:
    """Add the capability API to the Turret app, and the login sessions it shares with the proxy."""
    app[LOGINS] = LoginSessions()
    app.router.add_get("/v1/capabilities", handle_list)
    app.router.add_post(CALL_PREFIX + r"{name:[^/]+}", handle_call)
    app.router.add_post("/v1/explain", handle_explain)


def _audit(request: web.Request, runtime: Runtime, path: str) -> Audit:
    return request_audit(request, runtime, {"TURRET_PATH": path})


def _authenticated(request: web.Request, audit: Audit, runtime: Runtime) -> Agent:
    try:
        agent = authenticate(request, runtime)
        audit.fields["TURRET_AGENT"] = agent.name
        with request.app[LIMITER].slot(agent.name, agent.limits):
            pass  # charges the agent's rate; a call also holds a slot while it runs
    except RequestError as exc:
        audit.refused(exc)
        raise
    return agent


def visible(agent: Agent, capabilities: dict[str, Capability]) -> list[dict[str, Any]]:
    """The capabilities `agent` may use, each with a JSON Schema narrowed by its grants."""
    out = []
    for name, cap in sorted(capabilities.items()):
        grants = list(capability_grants(agent, name))
        if not grants or denied_by_name(agent, name):
            continue
        schema = capability_schema(cap, [dict(g.params) for g in grants])
        out.append(
            {
                "name": name,
                "description": cap.description,
                "service": cap.service,
                "parameters": schema,
            }
        )
    return out


async def handle_list(request: web.Request) -> web.Response:
    """`GET /v1/capabilities`: tool definitions for what this agent may call."""
    runtime = request.app[RUNTIME].current
    audit = _audit(request, runtime, "/v1/capabilities")
    agent = _authenticated(request, audit, runtime)
    audit.decision(Decision(True, "list capabilities"), 200)
    return web.json_response(
        {"ok": True, "capabilities": visible(agent, dict(runtime.config.capabilities))}
    )


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


async def handle_call(request: web.Request) -> web.Response:
    """`POST /v1/capabilities/{name}` with the parameters as a JSON object."""
    runtime = request.app[RUNTIME].current
    # The raw target, not the router's decoded copy, names the capability: no %-escapes.
    raw_name = request.raw_path.partition("?")[0].removeprefix(CALL_PREFIX)
    audit = _audit(request, runtime, CALL_PREFIX + raw_name)
    audit.fields["TURRET_CAPABILITY"] = raw_name
    agent = _authenticated(request, audit, runtime)
    try:
        capability = _capability(runtime, raw_name)
        decision, params, seen = await _decide_call(request, runtime, agent, audit, capability)
    except RequestError as exc:
        audit.refused(exc)
        raise
    if not decision.allowed:
        audit.decision(decision, 403)
        raise Forbidden(decision.reason)  # built from the config: names, rules, constraints
    try:
        # Only a call the agent may make is searched: the one inherent oracle (SECURITY.md).
        refuse_secret_body(request, runtime, seen)
    except RequestError as exc:
        audit.refused(exc)
        raise
    audit.decision(decision)
    try:
        with request.app[LIMITER].slot(agent.name, agent.limits, spend=False):
            done = await run_capability(
                request.app[UPSTREAMS], request.app[LOGINS], runtime, capability, params
            )
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
    return web.json_response({"ok": True, "result": done.result})


async def _decide_call(
    request: web.Request, runtime: Runtime, agent: Agent, audit: Audit, capability: Capability
) -> tuple[Decision, Params, bytes]:
    """The decision on a call, its checked parameters, and the body as the guards search it."""
    denied = _decided_by_name(agent, capability)
    if denied is not None:
        return denied, {}, b""
    raw = await read_body(request, MAX_BODY_BYTES, runtime.config.limits.body_timeout)
    # Searched as sent and as decoded: a JSON escape ("\\u0074urret_...") hides a secret from
    # the bytes, not from a parameter or a name quoted in a record.
    seen = searchable(raw)
    audit.scrub.look_at(seen)  # recorded fields may come from it: params, a path
    params = _checked(capability, _parsed(raw))
    audit.fields.update(audit_fields(capability, params, runtime.params_key))
    return decide_capability(agent, capability, params), params, seen


async def handle_explain(request: web.Request) -> web.Response:
    """`POST /v1/explain` with `{capability, params}` or `{service, method, path}`: the decision
    and its reason, without acting."""
    runtime = request.app[RUNTIME].current
    audit = _audit(request, runtime, "/v1/explain")
    agent = _authenticated(request, audit, runtime)
    try:
        limits = runtime.config.limits
        raw = await read_body(request, MAX_BODY_BYTES, limits.body_timeout)
        # Recorded fields may come from it, decoded: params, a path, a name quoted in an error.
        audit.scrub.look_at(searchable(raw))
        decision, reason = _explained(runtime, agent, audit, _parsed(raw))
    except RequestError as exc:
        audit.refused(exc)
        raise
    audit.decision(Decision(True, f"explain only: {decision.reason}", decision.rule), 200)
    return web.json_response(
        {
            "ok": True,
            "decision": {
                "allowed": decision.allowed,
                "reason": reason,
                "rule": decision.rule,
                "report_only": decision.would_deny,
            },
        }
    )


def _explained(
    runtime: Runtime, agent: Agent, audit: Audit, body: dict[str, JSON]
) -> tuple[Decision, str]:
    """The decision, and its reason as the agent is told it (quoting nothing it sent)."""
    if "capability" in body:
        _only(body, {"capability", "params"})
        name, params = body["capability"], body.get("params", {})
        if not isinstance(name, str) or not isinstance(params, dict):
            raise UnprocessableEntity("capability must be a name and params an object")
        capability = _capability(runtime, name)
        audit.fields["TURRET_CAPABILITY"] = name
        decision = _decided_by_name(agent, capability)
        if decision is None:
            checked = _checked(capability, params)
            audit.fields.update(audit_fields(capability, checked, runtime.params_key))
            decision = decide_capability(agent, capability, checked)
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
    decision = decide_proxy(agent, service, str(method), canonical)
    return decision, proxy_reason(decision)


def _only(body: dict[str, JSON], keys: set[str]) -> None:
    unknown = sorted(shown_key(key) for key in body.keys() - keys)
    if unknown:
        raise UnprocessableEntity(
            f"unknown key; expected {', '.join(sorted(keys))}",
            reason=f"unknown keys {', '.join(unknown)}",
        )
