"""The agents' application: `create_app` wires the pipeline's context, the upstream sessions and
the routes together; everything it serves is a thin adapter of `turret.pipeline`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import sqlite3
import time
from collections.abc import AsyncIterator, Callable

from aiohttp import web
from aiohttp.resolver import DefaultResolver

from turret.audit import Auditor
from turret.connector import ResolverFactory, SessionPool
from turret.counters import CountingRecorder, RequestCounters
from turret.errors import AuditUnavailable, StateError
from turret.exfil import TokenGuard
from turret.httpserver import PEER_IDENTITY, PeerIdentity, handler_args
from turret.model import Config
from turret.opaclient import OpaClient
from turret.peerid import SystemdUnits, identify
from turret.peers import asks_containment
from turret.pipeline.approvals import prune_approvals
from turret.pipeline.request import Context, record_flood_summary
from turret.pipeline.tokens import prune_expired
from turret.principal import Peer
from turret.ratelimit import AgentLimiter, FloodGate
from turret.requestids import RequestIds
from turret.runtime import RuntimeHolder
from turret.state import StateStore
from turret.web.alerts import ALERTS, Alerter, alerts_ctx
from turret.web.approvals import add_approval_routes
from turret.web.capabilities import add_capability_routes
from turret.web.keys import CONTEXT, COUNTERS, REQUEST_IDS, STATS, UPSTREAMS, Stats
from turret.web.leases import revoke_at_exit
from turret.web.middleware import error_middleware, no_version_banner
from turret.web.proxy import add_proxy_routes
from turret.web.tokens import add_token_routes

log = logging.getLogger("turret")


def create_app(
    holder: RuntimeHolder,
    auditor: Auditor,
    *,
    resolver: ResolverFactory = DefaultResolver,
    clock: Callable[[], float] = time.monotonic,
    state: StateStore | None = None,
    wall: Callable[[], float] = time.time,
) -> web.Application:
    """The Turret application; the upstream client sessions live as long as the app.

    `resolver` makes the DNS resolver whose answers the address policy checks; `clock` drives
    the rate limits, `wall` (seconds since the epoch) the expiry of tokens. `state` (the
    store) holds derived tokens and the operator's switches (seal, revocations); without it,
    minting a token answers 503 and nothing can be sealed or revoked. The server limits of the
    config the app starts with apply until restart. Each unix connection's peer is read as it
    opens (`turret.peerid`), and a caller unit's properties come from `systemctl show`.
    """
    app = web.Application(
        middlewares=[error_middleware],
        handler_args=handler_args(holder.current.config.limits),
    )
    counters = app[COUNTERS] = RequestCounters()
    recorder = CountingRecorder(auditor, counters, time.time, lambda: holder.current.config)
    oracle = OpaClient()
    app[CONTEXT] = Context(
        holder, recorder, AgentLimiter(clock), FloodGate(clock), TokenGuard(), state, wall,
        oracle=oracle,
        units=SystemdUnits(),
    )  # fmt: skip
    app.on_cleanup.append(lambda _: oracle.close())
    app[PEER_IDENTITY] = peer_identity(holder)
    app[STATS] = Stats()
    app[REQUEST_IDS] = RequestIds()
    app.cleanup_ctx.append(lambda app: _client_sessions(app, resolver))
    app[ALERTS] = Alerter()  # after the sessions: its cleanup (alerts finishing) runs first
    app.cleanup_ctx.append(alerts_ctx)
    app.cleanup_ctx.append(revoke_at_exit)  # also before the sessions close
    app.cleanup_ctx.append(_flood_summary_at_exit)
    if state is not None:
        app.cleanup_ctx.append(_token_pruner)
    app.on_response_prepare.append(no_version_banner)
    add_proxy_routes(app)
    add_capability_routes(app)
    add_token_routes(app)
    add_approval_routes(app)
    return app


def peer_identity(holder: RuntimeHolder) -> PeerIdentity:
    """How a connection's peer is read: its confinement too only while the running config has
    an agent whose containment is checked or recorded (asked again when the config changes)."""
    seen: list[tuple[Config, bool]] = []

    def read(sock: socket.socket) -> Peer | None:
        config = holder.current.config
        if not seen or seen[0][0] is not config:
            seen[:] = [(config, asks_containment(config.agents.values()))]
        return identify(sock, sandbox=seen[0][1])

    return read


async def _client_sessions(app: web.Application, resolver: ResolverFactory) -> AsyncIterator[None]:
    pool = app[UPSTREAMS] = SessionPool(resolver())
    try:
        yield
    finally:
        await pool.close()


async def _flood_summary_at_exit(app: web.Application) -> AsyncIterator[None]:
    yield
    record_flood_summary(app[CONTEXT], final=True)


PRUNE_EVERY = 600.0  # seconds between prunings of expired derived tokens


async def _token_pruner(app: web.Application) -> AsyncIterator[None]:
    async def prune() -> None:
        while True:
            try:
                await prune_expired(app[CONTEXT])
                prune_approvals(app[CONTEXT])
            except AuditUnavailable:
                log.exception("token_expired records lost; the tokens stay until the next try")
            except (StateError, sqlite3.Error):
                # The store failed, or was closed under a run still in flight at shutdown:
                # nothing is pruned this time, and the loop goes on (or is cancelled).
                log.exception("pruning expired tokens and approvals failed; tried again later")
            await asyncio.sleep(PRUNE_EVERY)

    task = asyncio.create_task(prune())
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
