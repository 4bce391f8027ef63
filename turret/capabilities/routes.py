"""The capability API: list what the agent may use, call a capability, explain a decision.

Every request is authenticated and audited like the proxy: the decision is recorded before
anything is sent upstream, and a lost audit record stops the call (503, nothing forwarded).
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
    read_body,
    refuse_secret_body,
    request_audit,
)
from turret.capabilities.engine import audit_fields, run_capability
from turret.capabilities.model import JSON, Capability
from turret.capabilities.schema import capability_schema, validate_params
from turret.capabilities.strictjson import MAX_BODY_BYTES, parse_object, searchable, shown_key
from turret.config import METHODS, Agent
from turret.errors import BadRequest, Forbidden, NotFound, RequestError, UnprocessableEntity
from turret.login import LOGINS, LoginSessions
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
        audit.decision(Decision(False, exc.reason), exc.status)
        raise
    return agent


def _refused(audit: Audit, exc: RequestError) -> None:
    """Record a refusal. The agent's answer is scrubbed like the record: it may quote what the
    agent sent (a parameter name), and a secret never goes back out, even to its sender."""
    audit.decision(Decision(False, exc.reason), exc.status)
    exc.message = audit.scrub(exc.message)


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
        raise NotFound(f"no capability {name!r}")
    return capability


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
        raw = await read_body(request, MAX_BODY_BYTES, runtime.config.limits.body_timeout)
        # Searched as sent and as decoded: a JSON escape ("\\u0074urret_...") hides a secret
        # from the bytes, not from a parameter or a name quoted in an error.
        seen = searchable(raw)
        audit.scrub.look_at(seen)  # recorded fields may come from it: params, a path
        refuse_secret_body(request, runtime, seen)
        params = validate_params(capability, parse_object(raw))
        audit.fields.update(audit_fields(capability, params, runtime.params_key))
        decision = decide_capability(agent, capability, params)
    except RequestError as exc:
        _refused(audit, exc)
        raise
    if not decision.allowed:
        audit.decision(decision, 403)
        raise Forbidden(decision.reason)
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
        body = parse_object(raw)
        decision = _explained(runtime, agent, audit, body)
    except RequestError as exc:
        _refused(audit, exc)
        raise
    audit.decision(Decision(True, f"explain only: {decision.reason}", decision.rule), 200)
    return web.json_response(
        {
            "ok": True,
            "decision": {
                "allowed": decision.allowed,
                "reason": decision.reason,
                "rule": decision.rule,
                "report_only": decision.would_deny,
            },
        }
    )


def _explained(runtime: Runtime, agent: Agent, audit: Audit, body: dict[str, JSON]) -> Decision:
    if "capability" in body:
        _only(body, {"capability", "params"})
        name, params = body["capability"], body.get("params", {})
        if not isinstance(name, str) or not isinstance(params, dict):
            raise UnprocessableEntity("capability must be a name and params an object")
        capability = _capability(runtime, name)
        checked = validate_params(capability, params)
        audit.fields.update(audit_fields(capability, checked, runtime.params_key))
        return decide_capability(agent, capability, checked)
    _only(body, {"service", "method", "path"})
    service, method, path = body.get("service"), body.get("method"), body.get("path")
    known = isinstance(method, str) and method in METHODS  # a list or object is unhashable
    if not isinstance(service, str) or not known or not isinstance(path, str):
        raise UnprocessableEntity(
            "give {capability, params} or {service, method, path} with a known method"
        )
    audit.fields["TURRET_SERVICE"] = service
    canonical = canonical_path(path.partition("?")[0])
    return decide_proxy(agent, service, str(method), canonical)


def _only(body: dict[str, JSON], keys: set[str]) -> None:
    for key in sorted(body.keys() - keys):
        expected = ", ".join(sorted(keys))
        raise UnprocessableEntity(f"unknown key {shown_key(key)}; expected {expected}")
