"""The guarded proxy and `whoami`, in the order their checks run.

A proxied request: split the raw target → authenticate → charge the rate and hold a slot →
canonicalise the path → decide → record the decision (before anything is forwarded; a lost
record is a 503) → 403 if denied → read the body → method overrides and the exfiltration guard →
forward (the echo guard runs on the answer) → record the outcome.
"""

from __future__ import annotations

import json

from turret.errors import BadRequest, Forbidden, PolicyDenied, RequestError
from turret.headers import caller_headers
from turret.model import Outbound, ProxyAction
from turret.paths import canonical_path
from turret.pipeline.opa import consult
from turret.pipeline.request import (
    Context,
    Exchange,
    Flow,
    Incoming,
    Reply,
    admit,
    authenticate,
    begin,
    count_use,
    refuse_if_uncontained,
    refuse_secrets,
)
from turret.policy import Decision, decide
from turret.principal import Principal
from turret.tokens import ScopeRestriction as Scoped
from turret.tokens import rfc3339

PROXY_PREFIX = "/v1/proxy/"


def split_target(raw_target: str) -> tuple[str, str, str]:
    """Split the raw request target `/v1/proxy/SERVICE/PATH?QUERY` without decoding it."""
    target, _, query = raw_target.partition("?")
    if not target.startswith(PROXY_PREFIX):
        raise BadRequest("request target must be /v1/proxy/SERVICE/PATH")
    service, _, rest = target[len(PROXY_PREFIX) :].partition("/")
    return service, "/" + rest, query


def proxy_reason(decision: Decision) -> str:
    """A proxy decision as the agent is told it: by the rule that made it, never quoting the
    request. Its service, path or method may hold a secret, and quoting them scrubbed would tell
    the agent which of its guesses is one."""
    if decision.would_deny:
        return "no grant allows this request; allowed in report mode"
    if decision.allowed:
        return f"granted by {decision.rule}"
    return f"denied by {decision.rule}" if decision.rule else "no grant allows this request"


async def whoami(ctx: Context, incoming: Incoming) -> Reply:
    """`GET /v1/whoami`: the calling agent and its grants (it only spends rate); with a derived
    token, also the token: its id, parent, expiry, uses left and scope (each ancestor's scope
    applies too: `chain` lists them, root first)."""
    flow = begin(ctx, incoming, "/v1/whoami")
    principal = await admit(flow)
    flow.audit.decision(Decision.allow("whoami"), 200)
    grants = [
        {"service": g.service, "methods": sorted(g.methods), "paths": [p.pattern for p in g.paths]}
        for g in principal.agent.proxy
    ]
    answer: dict[str, object] = {"ok": True, "agent": principal.name, "grants": {"proxy": grants}}
    lease = ctx.state.tokens.get(principal.token_id) if ctx.state and principal.token_id else None
    if lease is not None:
        answer["token"] = {
            "id": lease.id,
            "parent": lease.parent_id,
            "expires_at": rfc3339(lease.expires),
            "uses": lease.uses,
            "uses_left": lease.uses_left(),
            "may_derive": lease.may_derive,
            "scope": json.loads(lease.scope),
            "chain": [r.token_id for r in principal.restrictions if isinstance(r, Scoped)],
        }
    return Reply(200, answer)


async def proxy(ctx: Context, incoming: Incoming, io: Exchange) -> Reply:
    """`ANY /v1/proxy/{service}/{path}`: check, record, forward with the credential, guard."""
    flow = begin(ctx, incoming, incoming.path)
    try:
        raw_service, raw_path, query = split_target(incoming.target)
        flow.audit.fields.update(TURRET_SERVICE=raw_service, TURRET_PATH=raw_path)
        principal = authenticate(flow)
        await refuse_if_uncontained(flow, principal)
        await count_use(flow, principal)
        ctx.limiter.acquire(principal.name, principal.agent.limits)
    except RequestError as exc:
        flow.audit.refused(exc)
        raise
    try:
        return await _proxied(flow, principal, (raw_service, raw_path, query), io)
    finally:
        ctx.limiter.release(principal.name)


async def _proxied(
    flow: Flow, principal: Principal, target: tuple[str, str, str], io: Exchange
) -> Reply:
    raw_service, raw_path, query = target
    audit, runtime, method = flow.audit, flow.runtime, flow.incoming.method
    try:
        path = canonical_path(raw_path)
        audit.fields["TURRET_PATH"] = path.encoded
        action = ProxyAction(raw_service, method, path)
        decision = decide(principal, action, runtime.config.services)
        external = await consult(flow, principal, action, decision)
    except RequestError as exc:
        audit.refused(exc)
        raise
    if external is not None:
        audit.decision(external.decision, 403)
        raise PolicyDenied(external.message)
    if not decision.allowed:
        audit.decision(decision, 403)
        raise Forbidden(proxy_reason(decision))
    audit.decision(decision)
    service = runtime.config.services[raw_service]
    # Only now, for a request the agent may make, is it searched for secrets: the answer to a
    # denied one is the same whatever it carries.
    try:
        body = await io.body(service.max_request_bytes, runtime.config.limits.body_timeout)
        out = Outbound(method, path, query, caller_headers(flow.incoming.headers), body)
        await refuse_secrets(flow, out)
        result = await io.forward(runtime, service, out, audit=audit)
    except RequestError as exc:
        audit.outcome(exc.status, exc.reason, {"TURRET_BYTES_IN": flow.incoming.content_length})
        raise
    reason = "echo guard redacted credential material" if result.redactions else "forwarded"
    audit.outcome_of_action(
        result.status,
        reason,
        {
            "TURRET_BYTES_IN": len(body),
            "TURRET_BYTES_OUT": len(result.body),
            "TURRET_REDACTIONS": result.redactions or None,
        },
    )
    return Reply(result.status, body=result.body, headers=result.headers)
