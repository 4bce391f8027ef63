"""`python -m bench.stages`: microseconds per request in each stage of the proxy and capability
paths, in-process, so that a regression shows which stage moved.

The stages are the pipeline's own functions, called in the order `turret.pipeline.proxy.proxy`
and `turret.pipeline.calls.call` call them, with a real runtime (config, credentials, redactors),
a real audit sink and the real upstream client against the benchmark's nginx upstream on
loopback. One request at a time: what is measured is CPU per request, not concurrency. "upstream
send" is `turret.upstream.send` less the echo guard, which is timed on its own on the same answer
(the response headers and body as the upstream sent them). "whole pipeline" runs the real
`proxy`/`call` end to end, as a check that the stages add up.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp.resolver import DefaultResolver
from multidict import CIMultiDict, CIMultiDictProxy

from bench.procs import Procs
from bench.scenarios import CAPABILITY_MIX, UPSTREAM_MIX, proxied
from bench.servers import PROXY_PREFIX, SERVICE, Server, Workdir, start_upstream, turret_config
from turret.audit import Auditor, JournalSink, LineSink, Sink
from turret.capabilities.engine import audit_fields, call_result, outbound_for
from turret.capabilities.strictjson import searchable
from turret.config import read_config
from turret.connector import SessionPool
from turret.exfil import TokenGuard
from turret.headers import caller_headers
from turret.model import CapabilityAction, Outbound, ProxyAction, Service, UpstreamResponse
from turret.paths import canonical_path
from turret.pipeline import calls, proxy
from turret.pipeline.request import (
    Context,
    Incoming,
    admit,
    authenticate,
    begin,
    count_use,
    refuse_secret_body,
    refuse_secrets,
)
from turret.pipeline.tokens import TOKENS_PATH, mint
from turret.policy import decide
from turret.providers.build import build_runtime
from turret.ratelimit import AgentLimiter, FloodGate
from turret.records import RequestAudit
from turret.runtime import Runtime, RuntimeHolder
from turret.state import StateStore
from turret.upstream import response_headers, send

PROXY_STAGES = (
    "authenticate",
    "canonicalise",
    "decide",
    "audit decision",
    "exfiltration guard",
    "upstream send",
    "echo guard",
    "audit outcome",
)
CAPABILITY_STAGES = (
    "authenticate",
    "parameters",
    "decide",
    "exfiltration guard",
    "audit decision",
    "upstream send",
    "echo guard",
    "projection",
    "audit outcome",
)


@dataclass
class Laps:
    """Nanoseconds per stage, one entry per request."""

    ns: dict[str, list[int]] = field(default_factory=dict)
    _at: int = 0

    def start(self) -> None:
        self._at = time.perf_counter_ns()

    def lap(self, stage: str) -> None:
        """The time since the last lap (or start) goes to `stage`."""
        now = time.perf_counter_ns()
        self.ns.setdefault(stage, []).append(now - self._at)
        self._at = time.perf_counter_ns()  # the bookkeeping above is nobody's stage

    def since_last(self) -> int:
        """Nanoseconds since the last lap, not yet given to a stage."""
        return time.perf_counter_ns() - self._at

    def add(self, stage: str, ns: int) -> None:
        self.ns.setdefault(stage, []).append(ns)

    def median_us(self, stage: str) -> float:
        return statistics.median(self.ns[stage]) / 1000 if self.ns.get(stage) else float("nan")


@dataclass
class Bench:
    """A runtime and context as `create_app` builds them, and the upstream client pool."""

    ctx: Context
    pool: SessionPool
    raw_headers: CIMultiDictProxy[str]  # the upstream's answer as sent, for the echo guard
    token: str

    @property
    def runtime(self) -> Runtime:
        return self.ctx.holder.current


class _Exchange:
    """The pipeline's I/O with the body already read (the web layer's part is not measured)."""

    def __init__(self, bench: Bench, body: bytes) -> None:
        self._bench, self._body = bench, body

    async def body(self, limit: int, within: float) -> bytes:
        return self._body

    async def forward(
        self,
        runtime: Runtime,
        service: Service,
        out: Outbound,
        *,
        call: CapabilityAction | None = None,
        audit: RequestAudit | None = None,
    ) -> UpstreamResponse:
        provider = runtime.providers[service.name]
        return await send(
            self._bench.pool,
            provider,
            service,
            out,
            runtime.redactor,
            capability=call.capability.name if call else None,
            params=call.params if call else None,
            audit=audit,
        )


def _incoming(bench: Bench, method: str, target: str, body: bytes) -> Incoming:
    headers = CIMultiDict(
        {"Host": "127.0.0.1", "Authorization": f"Bearer {bench.token}", "Accept": "*/*"}
    )
    if body:
        headers["Content-Type"] = "application/json"
        headers["Content-Length"] = str(len(body))
    ctype = "application/json" if body else "application/octet-stream"
    return Incoming(method, target, CIMultiDictProxy(headers), ctype, len(body) or None, "r1")


async def _echo_guard(bench: Bench, laps: Laps, body: bytes) -> int:
    """Time the echo guard alone on the upstream's answer; its nanoseconds."""
    redactor = bench.runtime.redactor
    started = time.perf_counter_ns()
    response_headers(bench.raw_headers, redactor)
    await redactor.redact_async(body)
    spent = time.perf_counter_ns() - started
    laps.add("echo guard", spent)
    return spent


async def proxy_request(bench: Bench, laps: Laps, method: str, target: str, body: bytes) -> None:
    """One proxied request, stage by stage, as `turret.pipeline.proxy.proxy` runs it."""
    ctx, runtime = bench.ctx, bench.runtime
    incoming = _incoming(bench, method, target, body)
    laps.start()
    flow = begin(ctx, incoming, incoming.path)
    raw_service, raw_path, query = proxy.split_target(incoming.target)
    flow.audit.fields.update(TURRET_SERVICE=raw_service, TURRET_PATH=raw_path)
    principal = authenticate(flow)
    await count_use(flow, principal)
    ctx.limiter.acquire(principal.name, principal.agent.limits)
    laps.lap("authenticate")
    path = canonical_path(raw_path)
    flow.audit.fields["TURRET_PATH"] = path.encoded
    action = ProxyAction(raw_service, method, path)
    laps.lap("canonicalise")
    decision = decide(principal, action, runtime.config.services)
    laps.lap("decide")
    flow.audit.decision(decision)
    laps.lap("audit decision")
    out = Outbound(method, path, query, caller_headers(incoming.headers), body)
    await refuse_secrets(flow, out)
    laps.lap("exfiltration guard")
    service = runtime.config.services[raw_service]
    result = await send(bench.pool, runtime.providers[service.name], service, out, runtime.redactor)
    sent = laps.since_last()
    laps.add("upstream send", max(0, sent - await _echo_guard(bench, laps, result.body)))
    laps.start()
    flow.audit.outcome_of_action(
        result.status,
        "forwarded",
        {"TURRET_BYTES_IN": len(body), "TURRET_BYTES_OUT": len(result.body)},
    )
    laps.lap("audit outcome")
    ctx.limiter.release(principal.name)


async def capability_request(bench: Bench, laps: Laps, target: str, body: bytes) -> None:
    """One capability call, stage by stage, as `turret.pipeline.calls.call` runs it."""
    ctx, runtime = bench.ctx, bench.runtime
    incoming = _incoming(bench, "POST", target, body)
    laps.start()
    raw_name = incoming.path.removeprefix(calls.CALL_PREFIX)
    flow = begin(ctx, incoming, calls.CALL_PREFIX + raw_name)
    flow.audit.fields["TURRET_CAPABILITY"] = raw_name
    principal = await admit(flow)
    laps.lap("authenticate")
    capability = runtime.config.capabilities[raw_name]
    seen = searchable(body)
    flow.audit.scrub.look_at(seen)
    params = calls._checked(capability, calls._parsed(body))
    flow.audit.fields.update(audit_fields(capability, params, runtime.params_key))
    laps.lap("parameters")
    decision = decide(principal, CapabilityAction(capability, params), runtime.config.services)
    laps.lap("decide")
    await refuse_secret_body(flow, seen)
    laps.lap("exfiltration guard")
    flow.audit.decision(decision)
    laps.lap("audit decision")
    service = runtime.config.services[capability.service]
    out = outbound_for(capability, params, service)
    provider = runtime.providers[service.name]
    response = await send(bench.pool, provider, service, out, runtime.redactor)
    sent = laps.since_last()
    laps.add("upstream send", max(0, sent - await _echo_guard(bench, laps, response.body)))
    laps.start()
    done = call_result(capability, out, response, runtime.redactor)
    laps.lap("projection")
    flow.audit.outcome_of_action(done.status, "done", {"TURRET_BYTES_OUT": done.bytes_out})
    laps.lap("audit outcome")


async def whole(
    bench: Bench, laps: Laps, method: str, target: str, body: bytes, *, path: str
) -> None:
    """The real pipeline function end to end."""
    incoming = _incoming(bench, method, target, body)
    started = time.perf_counter_ns()
    if path == "proxy":
        await proxy.proxy(bench.ctx, incoming, _Exchange(bench, body))
    else:
        await calls.call(bench.ctx, incoming, _Exchange(bench, body))
    laps.add("whole pipeline", time.perf_counter_ns() - started)


def bench_factory(
    work: Workdir, upstream: Server, sink: Sink, state: StateStore | None = None
) -> Callable[[], Bench]:
    """A factory of `Bench` for the benchmark's config (with capabilities), auditing to `sink`;
    call it inside a running loop (the client pool needs one)."""
    config = read_config(turret_config(work, upstream, 9, capabilities=True))
    runtime = build_runtime(config, str(work.credentials))
    clock = time.monotonic
    ctx = Context(
        RuntimeHolder(runtime),
        Auditor(sink),
        AgentLimiter(clock),
        FloodGate(clock),
        TokenGuard(),
        state,
    )
    answer = _raw_headers(upstream)
    return lambda: Bench(ctx, SessionPool(DefaultResolver()), answer, work.agent_token)


def _raw_headers(upstream: Server) -> CIMultiDictProxy[str]:
    async def fetch() -> CIMultiDictProxy[str]:
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{upstream.port}/api/items/42") as resp,
        ):
            await resp.read()
            return resp.headers

    return asyncio.run(fetch())


async def measure(make: Callable[[], Bench], requests: int) -> dict[str, Laps]:
    """Each path's laps over `requests` requests (the mix cycled), after a warm-up."""
    bench = make()
    out = {"proxy": Laps(), "capability": Laps()}
    proxy_mix, cap_mix = proxied(UPSTREAM_MIX), CAPABILITY_MIX
    try:
        for i in range(requests + 50):
            laps = out["proxy"] if i >= 50 else Laps()  # the first 50 warm up, unrecorded
            c = proxy_mix[i % len(proxy_mix)]
            await proxy_request(bench, laps, c.method, c.path, c.body)
            await whole(bench, laps, c.method, c.path, c.body, path="proxy")
            cap = cap_mix[i % len(cap_mix)]
            laps = out["capability"] if i >= 50 else Laps()
            await capability_request(bench, laps, cap.path, cap.body)
            await whole(bench, laps, "POST", cap.path, cap.body, path="capability")
    finally:
        await bench.pool.close()
    return out


MINT = json.dumps(
    {
        "ttl": "1h",
        "may_derive": True,
        "proxy": [{"service": SERVICE, "methods": ["GET"], "paths": ["/api/items/*"]}],
    }
).encode()


async def decision_by_depth(make: Callable[[], Bench], depth: int, iterations: int) -> list[float]:
    """µs of authenticate + canonicalise + decide with the agent's own token (depth 0) and with
    derived tokens `depth` levels deep, each minted by the real pipeline from the one above."""
    bench = make()
    tokens = [bench.token]
    for _ in range(depth):
        incoming = _incoming(replace(bench, token=tokens[-1]), "POST", TOKENS_PATH, MINT)
        reply = await mint(bench.ctx, incoming, _Exchange(bench, MINT))
        tokens.append(reply.json["token"])  # type: ignore[index]
    await bench.pool.close()
    out = []
    for token in tokens:
        incoming = _incoming(replace(bench, token=token), "GET", PROXY_PREFIX + "/api/items/7", b"")
        times = []
        for _ in range(iterations):
            started = time.perf_counter_ns()
            flow = begin(bench.ctx, incoming, incoming.path)
            service, raw_path, _ = proxy.split_target(incoming.target)
            principal = authenticate(flow)
            action = ProxyAction(service, "GET", canonical_path(raw_path))
            if not decide(principal, action, bench.runtime.config.services).allowed:
                raise RuntimeError("stages: the derived token was refused")
            times.append(time.perf_counter_ns() - started)
        out.append(statistics.median(times) / 1000)
    return out


def table(columns: dict[str, dict[str, float]]) -> str:
    """µs per request per stage (median), one column per path and sink."""
    lines = ["| stage | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
    stages = list(dict.fromkeys([*PROXY_STAGES, *CAPABILITY_STAGES]))
    for stage in [*stages, "sum of stages", "whole pipeline"]:
        cells = []
        for medians in columns.values():
            if stage == "sum of stages":
                value = sum(v for k, v in medians.items() if k in stages)
            else:
                value = medians.get(stage, math.nan)
            cells.append("-" if math.isnan(value) else f"{value:,.1f}")  # NaN: not this path
        lines.append(f"| {stage} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


@dataclass
class StageResults:
    """The laps of each path and sink, and the decision time by derived-token depth."""

    laps: dict[str, Laps]
    by_depth_us: list[float]

    def figures(self) -> dict[str, Any]:
        """Plain values for results.json: median µs per stage per column."""
        return {
            "columns": {k: {s: v.median_us(s) for s in v.ns} for k, v in self.laps.items()},
            "decide_by_token_depth_us": self.by_depth_us,
        }


def run(requests: int, *, journal: bool) -> StageResults:
    """Start the upstream, measure both paths with the file sink (and journald if asked), and
    the decision time with derived tokens (a state store in a temporary directory)."""
    with tempfile.TemporaryDirectory(prefix="turret-stages-") as tmp:
        root = Path(tmp)
        work = Workdir.create(root / "work")
        sinks: dict[str, Callable[[], Sink]] = {
            "file": lambda: LineSink.open(str(root / "audit.jsonl"))
        }
        if journal:
            sinks["journald"] = JournalSink
        results: dict[str, Laps] = {}
        with Procs(work.logs) as procs:
            upstream = start_upstream(procs, work)
            for name, sink in sinks.items():
                laps = asyncio.run(measure(bench_factory(work, upstream, sink()), requests))
                for path, lap in laps.items():
                    results[f"{path}, {name} sink"] = lap
            (root / "state").mkdir(mode=0o700)
            state = StateStore.open(root / "state")
            try:
                make = bench_factory(work, upstream, sinks["file"](), state)
                by_depth = asyncio.run(decision_by_depth(make, 3, requests))
            finally:
                state.close()
        return StageResults(results, by_depth)


def depth_line(by_depth_us: list[float]) -> str:
    """The decision time by token depth, in one sentence."""
    times = ", ".join(f"depth {n}: {us:,.1f} µs" for n, us in enumerate(by_depth_us))
    return (
        "Authenticate + canonicalise + decide with the agent's own token (depth 0) and derived "
        f"tokens (each minted from the one before): {times}."
    )


def main(argv: list[str] | None = None) -> int:
    """Print the stage table."""
    p = argparse.ArgumentParser(prog="python -m bench.stages", description=__doc__)
    p.add_argument("--requests", type=int, default=2000, help="requests per path (default 2000)")
    p.add_argument("--journal", action="store_true", help="also audit to journald")
    args = p.parse_args(argv)
    results = run(args.requests, journal=args.journal)
    figures = results.figures()
    print(table(figures["columns"]))
    print(depth_line(figures["decide_by_token_depth_us"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
