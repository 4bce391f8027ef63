"""The agent-facing HTTP API: routes, the JSON error shape, and the audited path of a request."""

from __future__ import annotations

import asyncio
import logging
import time
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

from aiohttp import HttpVersion10, HttpVersion11, hdrs, web
from aiohttp.http import SERVER_SOFTWARE
from aiohttp.resolver import DefaultResolver

from turret.audit import INFO, NOTICE, Auditor, Event, Fields
from turret.auth import bearer_token
from turret.connector import ResolverFactory, SessionPool
from turret.echo import Redactor
from turret.errors import (
    AuditUnavailable,
    BadRequest,
    CredentialInRequest,
    Forbidden,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    RequestError,
    RequestTimeout,
    ServiceUnavailable,
    TooManyRequests,
    Unauthorized,
    error_body,
)
from turret.exfil import TokenGuard, carries, find_secret
from turret.httpserver import SERVER_HEADER, handler_args
from turret.login import LOGINS, send_upstream
from turret.model import Agent
from turret.paths import canonical_path
from turret.policy import Decision, decide_proxy
from turret.ratelimit import AgentLimiter, Flooded, FloodGate
from turret.requestids import RequestIds
from turret.runtime import Runtime, RuntimeHolder
from turret.scrub import Scrubber, scrub
from turret.upstream import Outbound, caller_headers, method_override_parameter, read_at_most

log = logging.getLogger("turret")

RUNTIME = web.AppKey("runtime", RuntimeHolder)
AUDITOR = web.AppKey("auditor", Auditor)
UPSTREAMS = web.AppKey("upstreams", SessionPool)
LIMITER = web.AppKey("limiter", AgentLimiter)
TOKENS = web.AppKey("tokens", TokenGuard)
FLOOD = web.AppKey("flood", FloodGate)
REQUEST_IDS = web.AppKey("request_ids", RequestIds)
REQUEST_ID = web.RequestKey("request_id", str)
PROXY_PREFIX = "/v1/proxy/"
SUPPORTED_HTTP = frozenset({HttpVersion10, HttpVersion11})


@dataclass
class Stats:
    """Counters for the status line."""

    requests: int = 0
    in_flight: int = 0


STATS = web.AppKey("stats", Stats)


def create_app(
    holder: RuntimeHolder,
    auditor: Auditor,
    *,
    resolver: ResolverFactory = DefaultResolver,
    clock: Callable[[], float] = time.monotonic,
) -> web.Application:
    """The Turret application; the upstream client sessions live as long as the app.

    `resolver` makes the DNS resolver whose answers the address policy checks; `clock` drives
    the rate limits. The server limits of the config the app starts with apply until restart.
    """
    app = web.Application(
        middlewares=[error_middleware],
        handler_args=handler_args(holder.current.config.limits),
    )
    app[RUNTIME] = holder
    app[AUDITOR] = auditor
    app[STATS] = Stats()
    app[LIMITER] = AgentLimiter(clock)
    app[TOKENS] = TokenGuard()
    app[FLOOD] = FloodGate(clock)
    app[REQUEST_IDS] = RequestIds()
    app.cleanup_ctx.append(lambda app: _client_sessions(app, resolver))
    app.cleanup_ctx.append(_flood_summary_at_exit)
    app.on_response_prepare.append(_no_version_banner)
    app.router.add_get("/v1/whoami", handle_whoami)
    # Everything under the prefix reaches the handler, which reads the raw target itself: the
    # router sees a decoded path, and what it decoded must not decide anything.
    app.router.add_route("*", PROXY_PREFIX + r"{tail:[\s\S]*}", handle_proxy)
    from turret.capabilities.routes import add_capability_routes  # noqa: PLC0415 - imports us

    add_capability_routes(app)
    return app


async def _client_sessions(app: web.Application, resolver: ResolverFactory) -> AsyncIterator[None]:
    pool = app[UPSTREAMS] = SessionPool(resolver())
    try:
        yield
    finally:
        await pool.close()


async def _flood_summary_at_exit(app: web.Application) -> AsyncIterator[None]:
    yield
    record_flood_summary(app, final=True)


async def _no_version_banner(_: web.Request, response: web.StreamResponse) -> None:
    # aiohttp fills in its banner before or after this hook, depending on its version; either
    # way it is replaced. An upstream's own Server header (a proxied answer) is left as it is.
    if response.headers.get(hdrs.SERVER, SERVER_SOFTWARE) == SERVER_SOFTWARE:
        response.headers[hdrs.SERVER] = SERVER_HEADER


def record_flood_summary(app: web.Application, *, final: bool = False) -> None:
    """Record how many flood refusals got no record of their own, once their window closed."""
    count = app[FLOOD].unrecorded(final=final)
    if count:
        app[AUDITOR].record(
            Event.DECISION,
            f"-: deny - {count} more requests without a valid token refused (rate limit)",
            {"TURRET_DECISION": "deny", "TURRET_STATUS": 429, "TURRET_SUPPRESSED": count},
            priority=NOTICE,
        )


@web.middleware
async def error_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Give every request an id and turn every error into the JSON error shape."""
    request_id = request.app[REQUEST_IDS].next()
    request[REQUEST_ID] = request_id
    stats = request.app[STATS]
    stats.in_flight += 1
    try:
        record_flood_summary(request.app)
        response = await _dispatch(request, handler)
    except RequestError as exc:
        response = _error_response(exc, request_id)
    except AuditUnavailable:
        log.exception("audit unavailable; request %s refused", request_id)
        response = _error_response(
            ServiceUnavailable("audit trail unavailable; request refused"), request_id
        )
    except Exception as exc:
        _log_internal_error(request, exc)
        response = _error_response(RequestError("internal error"), request_id)
    finally:
        stats.in_flight -= 1
        stats.requests += 1
    response.headers["X-Request-Id"] = request_id
    return response


def _log_internal_error(request: web.Request, exc: Exception) -> None:
    # An exception's message may quote what the agent sent: the traceback is scrubbed like an
    # audit field before it is logged.
    runtime = request.app[RUNTIME].current
    text = "".join(traceback.format_exception(exc))
    scrubbed = scrub(text, runtime.redactor, request.app[TOKENS])
    log.error("internal error in request %s: %s", request[REQUEST_ID], scrubbed)


def _check_version(request: web.Request) -> None:
    if request.version not in SUPPORTED_HTTP:
        # HTTP/0.9 has no framing at all; other parsers would read the bytes differently.
        raise BadRequest("only HTTP/1.0 and HTTP/1.1 are supported")


async def _dispatch(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    try:
        _check_version(request)
    except RequestError as exc:
        return _unrouted(request, exc)
    try:
        return await handler(request)
    except web.HTTPException as exc:
        return _unrouted(request, _from_http(exc))


def _unrouted(request: web.Request, exc: RequestError) -> web.Response:
    """A refusal no handler saw (no such endpoint, wrong method, HTTP/0.9), recorded here so that
    every request has its audit record."""
    runtime = request.app[RUNTIME].current
    audit = request_audit(request, runtime, {"TURRET_PATH": request.raw_path.partition("?")[0]})
    try:
        # A valid token makes its agent pay for the refusal; none puts it on the flood gate.
        agent = authenticate(request, runtime)
        audit.fields["TURRET_AGENT"] = agent.name
        with request.app[LIMITER].slot(agent.name, agent.limits):
            pass
    except Unauthorized:
        pass
    except RequestError as over_limit:
        exc = over_limit
    audit.refused(exc)
    return _error_response(exc, request[REQUEST_ID])


def _from_http(exc: web.HTTPException) -> RequestError:
    if exc.status == 405:
        return MethodNotAllowed("method not allowed for this endpoint")
    if exc.status == 404:
        return NotFound("no such endpoint")
    error = RequestError(exc.reason)
    error.status, error.code = exc.status, "http_error"
    return error


def _error_response(exc: RequestError, request_id: str) -> web.Response:
    response = web.json_response(error_body(exc.code, exc.message, request_id), status=exc.status)
    if isinstance(exc, TooManyRequests):
        response.headers["Retry-After"] = str(exc.retry_after)
    return response


@dataclass
class Audit:
    """The audit records of one request; common fields are filled in as they become known."""

    auditor: Auditor
    fields: Fields
    scrub: Scrubber
    started: float = field(default_factory=time.monotonic)

    def _record(self, event: Event, message: str, fields: Fields, priority: int = INFO) -> None:
        scrub = self.scrub
        clean = {k: scrub(v) if isinstance(v, str) else v for k, v in fields.items()}
        self.auditor.record(event, scrub(message), clean, priority=priority)

    def refused(self, exc: RequestError) -> None:
        """Record the refusal `exc`; of a flood, only the refusals the flood gate says to."""
        if not isinstance(exc, Flooded) or exc.recorded:
            self.decision(Decision(False, exc.reason), exc.status)

    def decision(self, decision: Decision, status: int | None = None) -> None:
        self._record(
            Event.DECISION,
            f"{self.fields.get('TURRET_AGENT') or '-'}: {'allow' if decision.allowed else 'deny'}"
            f" - {decision.reason}",
            {
                **self.fields,
                "TURRET_DECISION": "allow" if decision.allowed else "deny",
                "TURRET_REASON": decision.reason,
                "TURRET_RULE": decision.rule,
                "TURRET_REPORT": "would-deny" if decision.would_deny else None,
                "TURRET_STATUS": status,
            },
            priority=INFO if decision.allowed else NOTICE,
        )

    def outcome(self, status: int, reason: str, extra: Fields) -> None:
        ms = round((time.monotonic() - self.started) * 1000, 3)
        self._record(
            Event.OUTCOME,
            f"{self.fields.get('TURRET_AGENT')}: {status} {reason}",
            {
                **self.fields,
                **extra,
                "TURRET_STATUS": status,
                "TURRET_REASON": reason,
                "TURRET_DURATION_MS": ms,
            },
        )

    def outcome_of_action(self, status: int, reason: str, extra: Fields) -> None:
        """The outcome of a request the upstream has acted on. If this record is lost the agent
        still gets the true answer (a 503 now would invite a retry of what was done); the
        decision record was written before anything was sent, and the loss is logged."""
        try:
            self.outcome(status, reason, extra)
        except AuditUnavailable:
            log.exception("outcome record of request %s lost", self.fields["TURRET_REQUEST_ID"])


def authenticate(request: web.Request, runtime: Runtime) -> Agent:
    values = request.headers.getall("Authorization", [])
    # Two Authorization headers are ambiguous (which one would an upstream trust?): refused.
    token = bearer_token(values[0]) if len(values) == 1 else None
    agent = runtime.tokens.agent_for(token) if token else None
    if agent is None or token is None:  # (token is None implies agent is None; mypy needs both)
        # No agent answers for this request: it is charged to the one shared flood gate.
        request.app[FLOOD].admit(runtime.config.limits.unauthenticated)
        raise Unauthorized("missing or invalid agent token")
    request.app[TOKENS].remember(token)  # from now on, no request may carry it upstream
    return agent


def request_audit(request: web.Request, runtime: Runtime, fields: Fields) -> Audit:
    """The audit helper of one request, with the request id, method and a `Scrubber`."""
    app = request.app
    sent = f"{request.method} {request.raw_path}".encode("latin-1", "replace")
    return Audit(
        app[AUDITOR],
        {"TURRET_REQUEST_ID": request[REQUEST_ID], "TURRET_METHOD": request.method, **fields},
        Scrubber(runtime.redactor, app[TOKENS], sent),
    )


async def handle_whoami(request: web.Request) -> web.Response:
    """`GET /v1/whoami`: the calling agent and its grants."""
    runtime = request.app[RUNTIME].current
    audit = request_audit(request, runtime, {"TURRET_PATH": "/v1/whoami"})
    try:
        agent = authenticate(request, runtime)
        audit.fields["TURRET_AGENT"] = agent.name
        with request.app[LIMITER].slot(agent.name, agent.limits):
            pass  # whoami is cheap: it only spends rate
    except RequestError as exc:
        audit.refused(exc)
        raise
    audit.decision(Decision(True, "whoami"), 200)
    grants = [
        {"service": g.service, "methods": sorted(g.methods), "paths": [p.pattern for p in g.paths]}
        for g in agent.proxy
    ]
    return web.json_response({"ok": True, "agent": agent.name, "grants": {"proxy": grants}})


async def handle_proxy(request: web.Request) -> web.Response:
    """`ANY /v1/proxy/{service}/{path}`: check, audit, forward with the credential, redact."""
    runtime = request.app[RUNTIME].current
    audit = request_audit(request, runtime, {"TURRET_PATH": request.raw_path.partition("?")[0]})
    limiter = request.app[LIMITER]
    try:
        raw_service, raw_path, query = split_target(request.raw_path)
        audit.fields.update(TURRET_SERVICE=raw_service, TURRET_PATH=raw_path)
        agent = authenticate(request, runtime)
        audit.fields["TURRET_AGENT"] = agent.name
        limiter.acquire(agent.name, agent.limits)
    except RequestError as exc:
        audit.refused(exc)
        raise
    try:
        return await _proxy(request, runtime, agent, audit, (raw_service, raw_path, query))
    finally:
        limiter.release(agent.name)


async def _proxy(
    request: web.Request,
    runtime: Runtime,
    agent: Agent,
    audit: Audit,
    target: tuple[str, str, str],
) -> web.Response:
    raw_service, raw_path, query = target
    try:
        path = canonical_path(raw_path)
        audit.fields["TURRET_PATH"] = path.encoded
        service = runtime.config.services.get(raw_service)
        decision = decide_proxy(agent, raw_service, request.method, path)
    except RequestError as exc:
        audit.refused(exc)
        raise
    if service is None and decision.allowed:
        # Report mode allows what no grant covers, but there is nowhere to send this: the record
        # must say it was refused.
        decision = Decision(False, f"no service {raw_service!r}; {decision.reason}")
    if not decision.allowed or service is None:
        audit.decision(decision, 403)
        raise Forbidden(proxy_reason(decision))
    audit.decision(decision)
    # Only now, for a request the agent may make, is it searched for secrets: the answer to a
    # denied one is the same whatever it carries.
    try:
        limits = runtime.config.limits
        body = await read_body(request, service.max_request_bytes, limits.body_timeout)
        out = Outbound(request.method, path, query, caller_headers(request.headers), body)
        refuse_secrets(request, runtime, out)
        result = await send_upstream(
            request.app[UPSTREAMS], request.app[LOGINS], service, runtime, out
        )
    except RequestError as exc:
        audit.outcome(exc.status, exc.reason, {"TURRET_BYTES_IN": request.content_length})
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
    return web.Response(status=result.status, headers=result.headers, body=result.body)


def proxy_reason(decision: Decision) -> str:
    """A proxy decision as the agent is told it: by the rule that made it, never quoting the
    request. Its service, path or method may hold a secret, and quoting them scrubbed would tell
    the agent which of its guesses is one."""
    if decision.would_deny:
        return "no grant allows this request; allowed in report mode"
    if decision.allowed:
        return f"granted by {decision.rule}"
    return f"denied by {decision.rule}" if decision.rule else "no grant allows this request"


def secret_guards(request: web.Request, runtime: Runtime) -> tuple[Redactor, ...]:
    """What no request may carry: the loaded and injected credentials, and known agent tokens."""
    return (runtime.redactor, request.app[TOKENS].redactor)


def refuse_secret_body(request: web.Request, runtime: Runtime, body: bytes) -> None:
    """Raise `CredentialInRequest` if `body` (a capability's parameters) carries a secret."""
    if carries(body, secret_guards(request, runtime)):
        raise CredentialInRequest(
            "request carries a credential or agent token and was not forwarded",
            reason="exfiltration guard: credential material in the parameters",
        )


def refuse_secrets(request: web.Request, runtime: Runtime, out: Outbound) -> None:
    """Raise `CredentialInRequest` if `out` carries a credential or an agent token, and
    `Forbidden` if it carries a method override the upstream might obey."""
    override = method_override_parameter(out.query, out.body, request.content_type)
    if override is not None:
        raise Forbidden(
            "method override parameters are not allowed",
            reason=f"method override parameter {override!r} refused",
        )
    where = find_secret(
        secret_guards(request, runtime),
        path=out.path.encoded,
        query=out.query,
        headers=out.headers,
        body=out.body,
    )
    if where is not None:
        raise CredentialInRequest(
            "request carries a credential or agent token and was not forwarded",
            reason=f"exfiltration guard: credential material in the {where}",
        )


def split_target(raw_target: str) -> tuple[str, str, str]:
    """Split the raw request target `/v1/proxy/SERVICE/PATH?QUERY` without decoding it."""
    target, _, query = raw_target.partition("?")
    if not target.startswith(PROXY_PREFIX):
        raise BadRequest("request target must be /v1/proxy/SERVICE/PATH")
    service, _, rest = target[len(PROXY_PREFIX) :].partition("/")
    return service, "/" + rest, query


async def read_body(request: web.Request, limit: int, within: float) -> bytes:
    """The request body, refused with 413 as soon as it exceeds `limit` bytes (counted after
    decompression) and with 408 if it has not arrived within `within` seconds."""
    too_large = PayloadTooLarge(f"request body is larger than {limit} bytes")
    if request.content_length is not None and request.content_length > limit:
        raise too_large
    if not request.body_exists:
        return b""
    try:
        async with asyncio.timeout(within):
            data = await read_at_most(request.content, limit)
    except TimeoutError:
        raise RequestTimeout(f"request body did not arrive within {within:g} s") from None
    except web.RequestPayloadError:
        # The parser found the body undecodable (garbage gzip or deflate) after the head was
        # accepted: the agent's error, answered and audited like any other.
        raise BadRequest("request body could not be decoded") from None
    if data is None:
        raise too_large
    return data
