"""The measurements beside throughput and latency: cold start, reload under load, policy scale."""

from __future__ import annotations

import asyncio
import hashlib
import math
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.loadgen import Call, Connection, RateResult, open_loop, raw_request
from bench.procs import Procs, free_port
from bench.servers import (
    PROXY_PREFIX,
    SERVICE,
    Server,
    Workdir,
    baseline_argv,
    start_turret,
    turret_argv,
    turret_config,
)
from turret.auth import TokenIndex
from turret.config import load_config
from turret.paths import canonical_path
from turret.policy import decide_proxy
from turret.records import Event

PROBE = Call("GET", PROXY_PREFIX + "/api/items/42")


# --- cold start ----------------------------------------------------------------------------------


@dataclass
class Extras:
    """Everything measured beside the scenarios."""

    cold_ms: list[float] | None = None
    baseline_cold_ms: list[float] | None = None
    reload: ReloadResult | None = None
    policy: list[PolicyRow] | None = None
    check_config: CheckConfigResult | None = None
    stages: dict[str, Any] | None = None  # `bench.stages` figures


def cold_start(
    procs: Procs, work: Workdir, upstream: Server, runs: int, *, baseline: bool = False
) -> list[float]:
    """Milliseconds from the first connection to a socket-activated server to its first response.

    systemd-socket-activate holds the listening socket and starts Turret (or, with `baseline`,
    the aiohttp baseline) only when the first connection arrives, as systemd does with
    turret.socket.
    """
    times = []
    for _ in range(runs):
        port = free_port()
        if baseline:
            server = baseline_argv(work, upstream, None)
        else:
            server = turret_argv(work, turret_config(work, upstream, port, capabilities=False))
        log = work.logs / "cold-start.log"
        log.unlink(missing_ok=True)
        # Named as turret.socket names it: Turret serves no socket under another name.
        activate = ["systemd-socket-activate", "-l", f"127.0.0.1:{port}", "--fdname=agents"]
        proc = procs.start("cold-start", [*activate, *server])
        try:
            _wait_for_text(log, "Listening on", proc.poll)
            request = raw_request(PROBE, port, f"Bearer {work.agent_token}")
            status, elapsed = asyncio.run(_first_response(port, request))
            if status != 200:
                raise RuntimeError(f"cold start: first response {status}; see {log}")
            times.append(elapsed * 1000)
        finally:
            procs.stop(proc)
    return times


def _wait_for_text(path: Path, text: str, exited: Callable[[], int | None]) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if path.exists() and text in path.read_text(errors="replace"):
            return
        if exited() is not None:
            raise RuntimeError(f"process exited before printing {text!r}; see {path}")
        time.sleep(0.005)
    raise RuntimeError(f"{text!r} did not appear in {path} within 10 s")


async def _first_response(port: int, request: bytes) -> tuple[int, float]:
    started = time.perf_counter()
    conn = await Connection.open(port)
    try:
        status, _, _ = await conn.exchange(request)
    finally:
        conn.close()
    return status, time.perf_counter() - started


# --- reload under load ---------------------------------------------------------------------------


@dataclass
class ReloadResult:
    """Requests sent and failed across SIGHUP reloads; `unsupported` says why there were none."""

    sighups: int = 0
    reloads_audited: int = 0
    sent: int = 0
    failed: int = 0
    failures: dict[str, int] = field(default_factory=dict)
    unsupported: str | None = None


@dataclass(frozen=True)
class ReloadPlan:
    """`sighups` reloads, `interval` seconds apart, under `rate` requests per second."""

    sighups: int = 10
    interval: float = 0.5
    rate: float = 200.0


def reload_under_load(
    procs: Procs, work: Workdir, upstream: Server, plan: ReloadPlan
) -> ReloadResult:
    """Change the config and send SIGHUP, `plan.sighups` times, under steady load."""
    turret = start_turret(procs, work, upstream)
    audit_start = work.audit_file.stat().st_size if work.audit_file.exists() else 0
    result = ReloadResult()
    request = raw_request(PROBE, turret.port, f"Bearer {work.agent_token}")

    def change_config(variant: int) -> None:
        turret_config(work, upstream, turret.port, capabilities=False, variant=variant)

    try:
        load = asyncio.run(_load_with_reloads(turret, request, plan, change_config, result))
    finally:
        status = turret.proc.poll()
        procs.stop(turret.proc)
    if status is not None:
        how = f"was killed by {signal.Signals(-status).name}" if status < 0 else f"exited {status}"
        result.unsupported = f"Turret {how}: it does not handle SIGHUP yet"
    result.sent = len(load.latencies_ms) + load.failed
    result.failed, result.failures = load.failed, load.failures
    result.reloads_audited = _count_events(
        work.audit_file, audit_start, f'"TURRET_EVENT":"{Event.RELOADED.label}"'
    )
    if status is None and result.reloads_audited == 0:
        result.unsupported = "Turret survived SIGHUP but audited no reload"
    return result


async def _load_with_reloads(
    turret: Server,
    request: bytes,
    plan: ReloadPlan,
    change_config: Callable[[int], None],
    result: ReloadResult,
) -> RateResult:
    duration = (plan.sighups + 1) * plan.interval
    load = asyncio.create_task(open_loop(turret.port, [request], plan.rate, duration))
    for i in range(plan.sighups):
        await asyncio.sleep(plan.interval)
        if turret.proc.poll() is not None:
            break
        change_config(i + 1)
        os.kill(turret.pid, signal.SIGHUP)
        result.sighups += 1
    return await load


def _count_events(audit_file: Path, offset: int, needle: str) -> int:
    with audit_file.open("rb") as f:
        f.seek(offset)
        return sum(1 for line in f if needle.encode() in line)


# --- policy scale --------------------------------------------------------------------------------


@dataclass(frozen=True)
class PolicyRow:
    """Decision and config-load times for one size; `size` agents, or grants of one agent."""

    size: int
    load_agents_ms: float
    decide_agents_us: float
    load_grants_ms: float
    decide_grants_us: float


def policy_scale(
    sizes: tuple[int, ...], iterations: int = 2000, rounds: int = 5
) -> list[PolicyRow]:
    """Time `authenticate + canonicalise + decide_proxy` with many agents and with many grants.

    With N agents, each has one grant and the calling agent is in the middle. With N grants, one
    agent has them all and only the last one matches: the worst case of a linear scan. Every
    config is loaded first; then each of `rounds` rounds times a batch of every case in turn,
    so that a slow spell of the machine (it comes and goes, by tens of percent at this scale)
    hits every size alike instead of whichever was being measured. A case's figure is its
    fastest batch: the one least disturbed (a slower size shows in every batch; noise does not).
    """
    cases = []
    for n in sizes:
        cases.append(_prepare_policy(_agents_yaml(n), f"t{n // 2}", n // 2))
        cases.append(_prepare_policy(_grants_yaml(n), "t0", n - 1))
    per_batch = max(1, iterations // rounds)
    best = [math.inf] * len(cases)
    for _ in range(rounds):
        for i, (_, decide) in enumerate(cases):
            started = time.perf_counter()
            for _ in range(per_batch):
                decide()
            best[i] = min(best[i], (time.perf_counter() - started) / per_batch)
    rows = []
    for k, n in enumerate(sizes):
        (agents_ms, _), (grants_ms, _) = cases[2 * k], cases[2 * k + 1]
        rows.append(PolicyRow(n, agents_ms, best[2 * k] * 1e6, grants_ms, best[2 * k + 1] * 1e6))
    return rows


def _prepare_policy(text: str, token: str, target: int) -> tuple[float, Callable[[], bool]]:
    """Load `text` (timed, in ms) and return a decision of its benchmark request."""
    started = time.perf_counter()
    config = load_config(text)
    load_ms = (time.perf_counter() - started) * 1000
    tokens = TokenIndex(config.agents, {})
    raw_path = f"/api/g{target}/items/42"

    def decide() -> bool:
        agent = tokens.agent_for(token)
        assert agent is not None  # noqa: S101 - the benchmark's own token
        return decide_proxy(agent, SERVICE, "GET", canonical_path(raw_path)).allowed

    if not decide():
        raise RuntimeError("policy scale: the benchmark request was denied")
    return load_ms, decide


def _service_yaml() -> list[str]:
    return ["services:", f"  {SERVICE}:", "    url: http://127.0.0.1:9", "    auth: {bearer: c}"]


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _agents_yaml(n: int) -> str:
    lines = [*_service_yaml(), "agents:"]
    for i in range(n):
        lines += [
            f"  agent-{i}:",
            f"    token_sha256: {_digest(f't{i}')}",
            "    proxy:",
            f"      - {{service: {SERVICE}, methods: [GET, POST], paths: ['/api/g{i}/**']}}",
        ]
    return "\n".join(lines) + "\n"


def _grants_yaml(n: int) -> str:
    lines = [*_service_yaml(), "agents:", "  agent-0:", f"    token_sha256: {_digest('t0')}"]
    lines.append("    proxy:")
    lines += [
        f"      - {{service: {SERVICE}, methods: [GET, POST], paths: ['/api/g{i}/**']}}"
        for i in range(n)
    ]
    return "\n".join(lines) + "\n"


# --- check-config --------------------------------------------------------------------------------

BARE_LOAD = "import sys, yaml; yaml.load(open(sys.argv[1]).read(), Loader=yaml.CSafeLoader)"


@dataclass
class CheckConfigResult:
    """Seconds of whole `turret check-config` runs and of bare CSafeLoader loads, interleaved."""

    agents: int
    turret_s: list[float]
    bare_s: list[float]

    @property
    def turret_median_s(self) -> float:
        return statistics.median(self.turret_s)

    @property
    def bare_median_s(self) -> float:
        return statistics.median(self.bare_s)

    @property
    def ratio(self) -> float:
        return self.turret_median_s / self.bare_median_s

    def figures(self) -> dict[str, object]:
        """The result as plain values, derived figures included."""
        return {
            **self.__dict__,
            "turret_median_s": self.turret_median_s,
            "bare_median_s": self.bare_median_s,
            "ratio": self.ratio,
        }


def check_config(work: Workdir, agents: int, runs: int) -> CheckConfigResult:
    """`turret check-config FILE` of a config with `agents` agents against a bare
    `yaml.load(..., Loader=yaml.CSafeLoader)` of FILE, each a whole process, alternating."""
    path = work.root / f"agents-{agents}.yaml"
    path.write_text(_agents_yaml(agents))
    result = CheckConfigResult(agents, [], [])
    for _ in range(runs):
        result.turret_s.append(_timed([sys.executable, "-m", "turret", "check-config", str(path)]))
        result.bare_s.append(_timed([sys.executable, "-c", BARE_LOAD, str(path)]))
    return result


def _timed(argv: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(argv, check=True, capture_output=True, timeout=120)
    return time.perf_counter() - started
