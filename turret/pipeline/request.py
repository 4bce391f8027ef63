"""The plain values a request flows as, and the steps every endpoint shares.

`Incoming` is what the agent sent, as the web layer read it; `Reply` is what goes back; `Exchange`
is the I/O a request may need (its body, the upstream), done by the web layer. `begin` takes the
runtime the request uses to its end and opens its audit records; `admit` authenticates and
charges the limits. Every refusal on the way is recorded through `RequestAudit.refused`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from multidict import CIMultiDict, CIMultiDictProxy

from turret.approval import Outcomes
from turret.auth import bearer_token, token_sha256
from turret.containment import ContainmentSource
from turret.echo import Redactor, wire_bytes
from turret.errors import (
    CredentialInRequest,
    Forbidden,
    RequestError,
    Revoked,
    Sealed,
    TokenExhausted,
    TokenExpired,
    Unauthorized,
)
from turret.exfil import TokenGuard, carries_async, find_secret_async
from turret.headers import method_override_parameter
from turret.model import Agent, CapabilityAction, Outbound, Service, UpstreamResponse
from turret.pipeline.binding import binding_error, check_containment, peer_fields
from turret.principal import Peer, Principal, Source
from turret.ratelimit import AgentLimiter, FloodGate
from turret.records import NOTICE, Event, Recorder, RequestAudit
from turret.runtime import Runtime, RuntimeHolder
from turret.scrub import Scrubber
from turret.tokens import ScopeCache, ScopeRestriction

if TYPE_CHECKING:
    from turret.pipeline.opa import PolicyOracle
    from turret.state import DerivedToken, StateStore


@dataclass(frozen=True)
class Incoming:
    """A request as the agent sent it: the raw target (never a decoded copy) and its headers."""

    method: str
    target: str
    headers: CIMultiDictProxy[str]
    content_type: str = ""
    content_length: int | None = None
    request_id: str = ""
    peer: Peer | None = None

    @property
    def path(self) -> str:
        """The raw target without its query."""
        return self.target.partition("?")[0]


@dataclass(frozen=True)
class Reply:
    """An answer: a JSON document, or a proxied upstream answer (status, headers, bytes)."""

    status: int
    json: object = None  # JSON data: what json.dumps takes
    body: bytes | None = None
    headers: CIMultiDict[str] | None = None


class Exchange(Protocol):
    """The I/O a request needs; the web layer does it."""

    async def body(self, limit: int, within: float) -> bytes:
        """The request body: 413 over `limit` bytes, 408 if not in within `within` seconds."""

    async def forward(
        self,
        runtime: Runtime,
        service: Service,
        out: Outbound,
        *,
        call: CapabilityAction | None = None,
        audit: RequestAudit | None = None,
    ) -> UpstreamResponse:
        """Send `out` to `service` with its credential; the whole answer, guarded. `call` (a
        capability's, with its validated parameters) and `audit` go to the provider."""


@dataclass(frozen=True)
class Context:
    """What outlives a request: the runtime cell, the audit trail, limits, known tokens, the
    state store (None without a state directory: nothing can be sealed or revoked, and there
    are no derived tokens) and the wall clock."""

    holder: RuntimeHolder
    auditor: Recorder
    limiter: AgentLimiter
    flood: FloodGate
    tokens: TokenGuard
    state: StateStore | None = None
    wall: Callable[[], float] = time.time  # seconds since the epoch: token expiry
    scopes: ScopeCache = field(default_factory=ScopeCache)
    oracle: PolicyOracle | None = None  # `policy.opa`: without one, its step denies
    outcomes: Outcomes = field(default_factory=Outcomes)  # executed approvals' answers
    units: ContainmentSource | None = None  # callers' units: None, every one is `unknown`


@dataclass
class Flow:
    """One request on its way: its context, the runtime it started on, its audit records."""

    ctx: Context
    incoming: Incoming
    runtime: Runtime
    audit: RequestAudit
    lease: DerivedToken | None = None  # the derived token the request was made with

    def guards(self) -> tuple[Redactor, ...]:
        """What no request may carry: loaded and injected credentials, agent tokens, and
        credentials minted since the runtime was built that may still be valid."""
        return (self.runtime.redactor, self.ctx.tokens.redactor, *self.runtime.live_guards())


def begin(ctx: Context, incoming: Incoming, path: str) -> Flow:
    """Start a request on the current runtime, with its audit helper and the path it records."""
    runtime = ctx.holder.current
    sent = wire_bytes(f"{incoming.method} {incoming.target}")
    audit = RequestAudit(
        ctx.auditor,
        {
            "TURRET_REQUEST_ID": incoming.request_id,
            "TURRET_METHOD": incoming.method,
            "TURRET_PATH": path,
            **peer_fields(incoming.peer),
        },
        Scrubber(runtime.redactor, ctx.tokens, sent, tuple(runtime.live_guards())),
    )
    return Flow(ctx, incoming, runtime, audit)


def authenticate(flow: Flow) -> Principal:
    """The principal of the request's bearer token; `Unauthorized` (charged to the one shared
    flood gate, since no agent answers for it) without a valid one."""
    refuse_if_sealed(flow.ctx.state)
    values = flow.incoming.headers.getall("Authorization", [])
    # Two Authorization headers are ambiguous (which one would an upstream trust?): refused.
    token = bearer_token(values[0]) if len(values) == 1 else None
    agent = flow.runtime.tokens.agent_for(token) if token else None
    if agent is None and token is not None:
        derived = _derived_principal(flow, token)
        if derived is not None:
            refuse_if_revoked(flow.ctx.state, derived.name)  # its agent's revocation too
            return derived
    if agent is None or token is None:  # (token is None implies agent is None; mypy needs both)
        flow.ctx.flood.admit(flow.runtime.config.limits.unauthenticated)
        raise Unauthorized("missing or invalid agent token")
    flow.ctx.tokens.remember(token)  # from now on, no request may carry it upstream
    flow.audit.fields["TURRET_AGENT"] = agent.name
    refuse_if_unbound(flow, agent)
    refuse_if_revoked(flow.ctx.state, agent.name)
    _refuse_expired(flow, agent)
    return Principal(agent, peer=flow.incoming.peer)


def refuse_if_unbound(flow: Flow, agent: Agent) -> None:
    """`PeerMismatch` (charged like no token: the caller is not the agent) when `agent` is
    bound and the request's peer is not one of its callers. Checked before revocation and
    expiry, so that another caller learns nothing about the token."""
    mismatch = binding_error(agent, flow.incoming.peer)
    if mismatch is not None:
        flow.ctx.flood.admit(flow.runtime.config.limits.unauthenticated)
        raise mismatch


async def refuse_if_uncontained(flow: Flow, principal: Principal) -> None:
    """Record the caller unit's containment; `NotContained` under `require_contained`."""
    await check_containment(
        flow.ctx.units, principal.agent, flow.incoming.peer, flow.audit.fields
    )


def refuse_if_sealed(state: StateStore | None) -> None:
    """`Sealed` while an operator has sealed Turret: read from the store at every request, so a
    seal takes effect on the next one, on every listener, and survives reload and restart."""
    if state is not None and state.controls.sealed() is not None:
        raise Sealed("turret is sealed by its operator", reason="sealed")


def refuse_if_revoked(state: StateStore | None, agent: str) -> None:
    """`Revoked` for an agent an operator revoked (a query of the store, not a copy of it)."""
    if state is not None and agent in state.controls.revoked_agents():
        raise Revoked("agent revoked", reason=f"agent {agent} is revoked")


def _refuse_expired(flow: Flow, agent: Agent) -> None:
    """`TokenExpired` once a configured token is past its `expires`."""
    if agent.expires is not None and flow.ctx.wall() >= agent.expires:
        raise TokenExpired("this agent token has expired", reason="configured token expired")


def _derived_principal(flow: Flow, token: str) -> Principal | None:
    """The principal of a derived token, None if `token` is not one; `Revoked` or
    `TokenExpired` if it or an ancestor is, `TokenExhausted` if no use is left. Its scope and
    each ancestor's, read against the current config, are the principal's restrictions."""
    state = flow.ctx.state
    lease = state.tokens.by_digest(token_sha256(token)) if state is not None else None
    agent = flow.runtime.config.agents.get(lease.agent) if lease is not None else None
    if state is None or lease is None or agent is None:
        return None  # an unknown token, or the agent is no longer configured
    flow.ctx.tokens.remember(token)
    chain = state.tokens.ancestry(lease.id)
    flow.lease = lease
    flow.audit.fields.update(
        TURRET_AGENT=agent.name,
        TURRET_TOKEN_ID=lease.id,
        TURRET_TOKEN_CHAIN=",".join(t.id for t in chain),
    )
    refuse_if_unbound(flow, agent)  # its agent's binding: before anything about the token
    now = flow.ctx.wall()
    refusal: Unauthorized | None = None
    if any(t.revoked_at is not None for t in chain):
        refusal = Revoked("this token was revoked", reason=f"token {lease.id} revoked")
    elif any(now >= t.expires for t in chain) or _past(agent.expires, now):
        refusal = TokenExpired("this token has expired", reason=f"token {lease.id} expired")
    elif lease.uses_left() == 0:
        refusal = TokenExhausted("this token has no use left", reason=f"token {lease.id} used up")
    if refusal is not None:
        # A token that no longer works is charged like no token: to the shared flood gate.
        flow.ctx.flood.admit(flow.runtime.config.limits.unauthenticated)
        raise refusal
    config = flow.runtime.config
    scopes = tuple(ScopeRestriction(t.id, flow.ctx.scopes.get(t.scope, config)) for t in chain)
    return Principal(agent, Source.DERIVED, lease.id, scopes, flow.incoming.peer)


def _past(moment: float | None, now: float) -> bool:
    return moment is not None and now >= moment


async def count_use(flow: Flow, principal: Principal) -> None:
    """Count the request against a derived token's `max_uses` (allowed or not): one atomic
    write, off the loop; `TokenExhausted` when none was left."""
    state = flow.ctx.state
    if principal.token_id is None or state is None:
        return
    count = await asyncio.to_thread(state.tokens.use, principal.token_id)
    if count is None:
        raise TokenExhausted("this token has no use left", reason="token used up")


async def _charged(flow: Flow) -> Principal:
    """Authenticate, count a derived token's use and spend one request of the agent's rate (no
    slot is held beyond that)."""
    principal = authenticate(flow)
    await refuse_if_uncontained(flow, principal)
    await count_use(flow, principal)
    with flow.ctx.limiter.slot(principal.name, principal.agent.limits):
        pass
    return principal


async def admit(flow: Flow) -> Principal:
    """`_charged`, with every refusal recorded: the start of every cheap endpoint."""
    try:
        principal = await _charged(flow)
    except RequestError as exc:
        flow.audit.refused(exc)
        raise
    return principal


_IN_REQUEST = "request carries a credential or agent token and was not forwarded"


async def refuse_secret_body(flow: Flow, body: bytes) -> None:
    """Raise `CredentialInRequest` if `body` (a capability's parameters) carries a secret."""
    if await carries_async(body, flow.guards()):
        raise CredentialInRequest(
            _IN_REQUEST, reason="exfiltration guard: credential material in the parameters"
        )


async def refuse_secrets(flow: Flow, out: Outbound) -> None:
    """Raise `CredentialInRequest` if `out` carries a credential or an agent token, and
    `Forbidden` if it carries a method override the upstream might obey."""
    override = method_override_parameter(out.query, out.body, flow.incoming.content_type)
    if override is not None:
        raise Forbidden(
            "method override parameters are not allowed",
            reason=f"method override parameter {override!r} refused",
        )
    where = await find_secret_async(
        flow.guards(), path=out.path.encoded, query=out.query, headers=out.headers, body=out.body
    )
    if where is not None:
        raise CredentialInRequest(
            _IN_REQUEST, reason=f"exfiltration guard: credential material in the {where}"
        )


async def unrouted(ctx: Context, incoming: Incoming, exc: RequestError) -> RequestError:
    """A refusal no endpoint saw (no such endpoint, wrong method, HTTP/0.9), recorded so that
    every request has its audit record; the error to answer with (a limit may replace it)."""
    flow = begin(ctx, incoming, incoming.path)
    try:
        # A valid token makes its agent pay for the refusal (and a derived one counts a use);
        # none puts it on the flood gate.
        await _charged(flow)
    except Unauthorized:
        pass
    except RequestError as over_limit:
        exc = over_limit
    flow.audit.refused(exc)
    return exc


def record_flood_summary(ctx: Context, *, final: bool = False) -> None:
    """Record how many flood refusals got no record of their own, once their window closed."""
    count = ctx.flood.unrecorded(final=final)
    if count:
        ctx.auditor.record(
            Event.DECISION,
            f"-: deny - {count} more requests without a valid token refused (rate limit)",
            {"TURRET_DECISION": "deny", "TURRET_STATUS": 429, "TURRET_SUPPRESSED": count},
            priority=NOTICE,
        )
