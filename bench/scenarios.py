"""The scenario table: what is measured, through which server, with which requests.

Adding a scenario is adding one `Scenario` to `SCENARIOS` (and, for a new kind of server, one
entry to `STARTERS`). A scenario whose server refuses to start or lacks its `requires` endpoint
is reported as "not yet available" instead of failing the run.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench.loadgen import (
    Call,
    Connection,
    RateResult,
    SaturationResult,
    held_connections,
    open_loop,
    raw_request,
    run_wrk,
    write_wrk_script,
)
from bench.procs import ExitedEarly, Procs, rss_kib
from bench.servers import (
    PROXY_PREFIX,
    SERVICE,
    Server,
    Workdir,
    start_baseline,
    start_nginx_proxy,
    start_turret,
)

NEW_ITEM = json.dumps({"name": "new item", "tags": ["x"] * 8, "note": "n" * 400}).encode()
# The same mix of reads and writes reaches the upstream in every scenario.
UPSTREAM_MIX = (
    Call("GET", "/api/items/42"),
    Call("GET", "/api/items?state=open&limit=20"),
    Call("POST", "/api/items", NEW_ITEM),
    Call("GET", "/api/items/7"),
)


def proxied(mix: tuple[Call, ...]) -> tuple[Call, ...]:
    """`mix` as an agent sends it through a proxy: under /v1/proxy/SERVICE."""
    return tuple(Call(c.method, PROXY_PREFIX + c.path, c.body) for c in mix)


CAPABILITY_MIX = (Call("POST", f"/v1/capabilities/{SERVICE}.get_item", b'{"id": 42}'),)


@dataclass(frozen=True)
class Scenario:
    """One column of the comparison."""

    name: str
    label: str
    server: str  # a key of STARTERS, or "upstream" for the upstream itself
    calls: tuple[Call, ...]
    credential: str  # "agent": the agent's Turret token; "upstream": the upstream's own secret
    requires: str | None = None  # an endpoint that must exist (GET, not 404) for the scenario


SCENARIOS = (
    Scenario("direct", "direct", "upstream", UPSTREAM_MIX, "upstream"),
    Scenario("nginx", "nginx", "nginx", proxied(UPSTREAM_MIX), "agent"),
    Scenario("baseline", "aiohttp baseline", "baseline", proxied(UPSTREAM_MIX), "agent"),
    Scenario("turret-proxy", "Turret proxy", "turret", proxied(UPSTREAM_MIX), "agent"),
    Scenario(
        "turret-capability",
        "Turret capability",
        "turret-capability",
        CAPABILITY_MIX,
        "agent",
        requires="/v1/capabilities",
    ),
)

Starter = Callable[[Procs, Workdir, Server], Server]
STARTERS: dict[str, Starter] = {
    "nginx": start_nginx_proxy,
    "baseline": start_baseline,
    "turret": start_turret,
    "turret-capability": lambda p, w, u: start_turret(p, w, u, capabilities=True),
}


@dataclass(frozen=True)
class Settings:
    """How long and how hard to measure, and how many interleaved rounds."""

    warmup_s: int = 1  # wrk takes whole seconds
    saturation_s: int = 5
    connections: int = 64
    rate: float = 200.0  # the fixed rate for added latency
    rate_s: float = 8.0
    capacity_rate: float = 500.0  # the capability path must hold this without queueing
    held_connections: int = 1000
    rounds: int = 3  # each scenario measured this many times, interleaved with the others
    profile_dir: Path | None = None  # if set, py-spy records Python servers at saturation


@dataclass
class Outcome:
    """The figures of one scenario across the rounds, or why it could not run."""

    scenario: Scenario
    unavailable: str | None = None
    saturations: list[SaturationResult] = field(default_factory=list)
    rates: list[RateResult] = field(default_factory=list)
    capacity: RateResult | None = None  # at `Settings.capacity_rate`, capability path only
    rss_idle_kib: int | None = None
    rss_held_kib: int | None = None
    held_ok: int | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def rate(self) -> RateResult | None:
        """Every round's fixed-rate run as one (latencies pooled)."""
        if not self.rates:
            return None
        pooled = RateResult()
        for r in self.rates:
            pooled.latencies_ms += r.latencies_ms
            pooled.lags_ms += r.lags_ms
            pooled.leaks += r.leaks
            for kind, n in r.failures.items():
                pooled.failures[kind] = pooled.failures.get(kind, 0) + n
        return pooled


class Unavailable(Exception):
    """The scenario cannot run against this build (a feature not there yet)."""


@dataclass
class _Live:
    """A scenario whose server is up, with what it is sent."""

    outcome: Outcome
    server: Server
    requests: list[bytes]
    script: Path


def authorization(work: Workdir, scenario: Scenario) -> str:
    """The Authorization header value the client sends in `scenario`."""
    token = work.agent_token if scenario.credential == "agent" else work.upstream_secret
    return f"Bearer {token}"


def run_scenarios(
    procs: Procs,
    work: Workdir,
    upstream: Server,
    scenarios: list[Scenario],
    settings: Settings,
    *,
    say: Callable[[str], None],
) -> list[Outcome]:
    """Start every scenario's server, then measure them in interleaved rounds (A B C, C B A, ...)
    so that a change in the machine's load hits every scenario alike; stop them all."""
    outcomes = [Outcome(s) for s in scenarios]
    live: list[_Live] = []
    try:
        for outcome in outcomes:
            started = _prepare(procs, work, upstream, outcome, settings)
            if started is not None:
                live.append(started)
        for n in range(settings.rounds):
            order = live if n % 2 == 0 else live[::-1]
            names = ", ".join(item.outcome.scenario.name for item in order)
            say(f"round {n + 1} of {settings.rounds}: {names}")
            for item in order:
                _round(procs, work, item, settings, profile=n == 0)
        for item in live:
            _capacity_and_memory(work, item, settings)
    finally:
        for item in live:
            if item.server is not upstream:
                procs.stop(item.server.proc)
    return outcomes


def _prepare(
    procs: Procs, work: Workdir, upstream: Server, outcome: Outcome, settings: Settings
) -> _Live | None:
    scenario = outcome.scenario
    try:
        server = _start(procs, work, upstream, scenario)
    except Unavailable as exc:
        outcome.unavailable = str(exc)
        return None
    auth = authorization(work, scenario)
    requests = [raw_request(c, server.port, auth) for c in scenario.calls]
    first = asyncio.run(_status_of(server.port, requests[0]))
    if not 200 <= first < 300:
        raise RuntimeError(f"{scenario.name}: first request answered {first}; see {work.logs}")
    outcome.rss_idle_kib = rss_kib(server.pid)
    script = write_wrk_script(work.root / f"wrk-{scenario.name}.lua", scenario.calls, auth)
    if settings.warmup_s > 0:
        run_wrk(procs, server.port, script, settings.warmup_s, settings.connections)
    return _Live(outcome, server, requests, script)


def _round(procs: Procs, work: Workdir, item: _Live, settings: Settings, *, profile: bool) -> None:
    """One saturation run and one fixed-rate run of one scenario."""
    outcome, server = item.outcome, item.server
    canaries = [c.encode() for c in work.canaries]
    outcome.rates.append(
        asyncio.run(
            open_loop(server.port, item.requests, settings.rate, settings.rate_s, canaries=canaries)
        )
    )
    profiler, flame_graph = _profiler(procs, server, outcome.scenario, settings, profile=profile)
    outcome.saturations.append(
        run_wrk(procs, server.port, item.script, settings.saturation_s, settings.connections)
    )
    if profiler is not None:
        profiler.wait(settings.saturation_s + 30)
        outcome.notes.append(f"profile: {flame_graph}")


def _capacity_and_memory(work: Workdir, item: _Live, settings: Settings) -> None:
    outcome, server = item.outcome, item.server
    if outcome.scenario.name == "turret-capability":
        canaries = [c.encode() for c in work.canaries]
        outcome.capacity = asyncio.run(
            open_loop(
                server.port,
                item.requests,
                settings.capacity_rate,
                settings.rate_s,
                canaries=canaries,
            )
        )
    outcome.held_ok, outcome.rss_held_kib = asyncio.run(
        _rss_with_connections(server, item.requests[0], settings.held_connections)
    )


def _start(procs: Procs, work: Workdir, upstream: Server, scenario: Scenario) -> Server:
    if scenario.server == "upstream":
        return upstream
    try:
        server = STARTERS[scenario.server](procs, work, upstream)
    except ExitedEarly as exc:
        if scenario.requires is None:
            raise
        raise Unavailable(f"server {exc}") from None
    if scenario.requires is not None:
        request = raw_request(
            Call("GET", scenario.requires), server.port, authorization(work, scenario)
        )
        status = asyncio.run(_status_of(server.port, request))
        if status in (404, 405):
            procs.stop(server.proc)
            raise Unavailable(f"GET {scenario.requires} answered {status}")
    return server


async def _status_of(port: int, request: bytes) -> int:
    conn = await Connection.open(port)
    try:
        status, _, _ = await conn.exchange(request)
    finally:
        conn.close()
    return status


def _profiler(
    procs: Procs, server: Server, scenario: Scenario, settings: Settings, *, profile: bool
) -> tuple[subprocess.Popen[bytes] | None, Path | None]:
    """py-spy sampling a Python server (not nginx) for one saturation run, as collapsed stacks
    (`python -m bench.profile` summarises them; flamegraph.pl or speedscope draw them)."""
    if not profile or settings.profile_dir is None or scenario.server in ("upstream", "nginx"):
        return None, None
    # The bench extra installs py-spy beside the interpreter, which need not be on PATH.
    beside = Path(sys.executable).with_name("py-spy")
    spy = str(beside) if beside.exists() else shutil.which("py-spy")
    if spy is None:
        raise RuntimeError("--profile needs py-spy: pip install -e '.[bench]'")
    raw = settings.profile_dir / f"profile-{scenario.name}.txt"
    argv = [spy, "record", "--nonblocking", "--format", "raw", "-r", "250"]
    argv += ["-d", str(settings.saturation_s), "-p", str(server.pid), "-o", str(raw)]
    return procs.start("py-spy", argv), raw


async def _rss_with_connections(server: Server, request: bytes, count: int) -> tuple[int, int]:
    async with held_connections(server.port, request, count) as ok:
        return ok, rss_kib(server.pid)
