"""The dead-man switch at work, driven round by round with its own clock: a real heartbeat
server on loopback, a real state store and audit file; seal or revoke, once per failure."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from tests.adversarial.conftest import HostsResolver
from turret.audit import Auditor, LineSink
from turret.config import load_config
from turret.connector import SessionPool
from turret.deadman import DeadMan, last_checkin, record_checkin, running
from turret.errors import StartupError
from turret.providers.build import build_runtime
from turret.runtime import RuntimeHolder
from turret.state import NewToken, StateStore

BASE = """\
services:
  forge: {url: "http://127.0.0.1:3000", auth: {bearer: gitea-token}}
agents:
  alice: {token_sha256: "%s"}
""" % ("ab" * 32)


@dataclass
class Beat:
    """The heartbeat receiver: answers `status` (or hangs, or redirects); counts the probes."""

    status: int = 200
    hang: bool = False
    hits: int = 0
    url: str = ""
    release: asyncio.Event = field(default_factory=asyncio.Event)

    def app(self) -> web.Application:
        async def ping(request: web.Request) -> web.StreamResponse:
            self.hits += 1
            if self.hang:
                await self.release.wait()
            headers = {"Location": "/ping"} if 300 <= self.status < 400 else {}
            return web.Response(status=self.status, text="OK", headers=headers)

        app = web.Application()
        app.router.add_get("/ping", ping)
        return app


@pytest.fixture
async def beat() -> AsyncIterator[Beat]:
    b = Beat()
    server = TestServer(b.app(), host="127.0.0.1")
    await server.start_server()
    b.url = str(server.make_url("/ping"))
    yield b
    b.release.set()
    await server.close()


@dataclass
class Clock:
    now: float = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Switch:
    deadman: DeadMan
    clock: Clock
    state: StateStore
    audit_path: Path

    def records(self, suffix: str = "") -> list[dict[str, Any]]:
        lines = self.audit_path.read_text().splitlines() if self.audit_path.exists() else []
        return [r for r in map(json.loads, lines) if r["MESSAGE_ID"].endswith(suffix)]

    async def rounds(self, n: int, step: float) -> list[int]:
        """`n` rounds, `step` seconds apart; how many firings each round had."""
        fired = []
        for _ in range(n):
            fired.append(len(await self.deadman.tick()))
            self.clock.now += step
        return fired


@pytest.fixture
def state(tmp_path: Path) -> AsyncIterator[StateStore] | Any:
    directory = tmp_path / "state"
    directory.mkdir(mode=0o700)
    store = StateStore.open(directory)
    yield store
    store.close()


@pytest.fixture
async def make_switch(
    tmp_path: Path, creds_dir: Path, state: StateStore
) -> AsyncIterator[Any]:
    pools: list[SessionPool] = []

    def make(section: str, resolver: HostsResolver | None = None) -> Switch:
        runtime = build_runtime(load_config(BASE + section), str(creds_dir))
        audit = tmp_path / "audit.jsonl"
        pool = SessionPool(resolver or HostsResolver({}))
        pools.append(pool)
        clock = Clock()
        auditor = Auditor(LineSink.open(str(audit)))
        deadman = DeadMan(RuntimeHolder(runtime), state, auditor, pool, clock)
        return Switch(deadman, clock, state, audit)

    yield make
    for pool in pools:
        await pool.close()


async def test_heartbeat_seals_after_misses_in_a_row_and_acts_once(
    make_switch: Any, beat: Beat
) -> None:
    sw = make_switch(f"heartbeat: {{url: '{beat.url}', interval: 60, timeout: 1, misses: 3}}\n")
    assert await sw.rounds(2, 60) == [0, 0] and beat.hits == 2
    assert sw.state.controls.sealed() is None
    beat.status = 500
    assert await sw.rounds(3, 60) == [0, 0, 1]
    seal = sw.state.controls.sealed()
    assert seal is not None and seal.by == "heartbeat" and "HTTP 500" in seal.reason
    (fired,) = sw.records("6e60")
    assert fired["PRIORITY"] == "2" and fired["TURRET_ACTION"] == "seal"
    assert "3 times in a row" in fired["TURRET_REASON"] and beat.url not in json.dumps(fired)
    assert sw.deadman.status.startswith("dead-man switch fired: heartbeat missed 3 times")
    # Still failing, and the operator unseals: the switch does not act again for this failure.
    sw.state.controls.unseal()
    assert await sw.rounds(5, 60) == [0] * 5
    assert sw.state.controls.sealed() is None and len(sw.records("6e60")) == 1
    beat.status = 204
    assert await sw.rounds(1, 60) == [0] and len(sw.records("6e61")) == 1
    assert sw.deadman.status == ""
    beat.status = 503
    assert await sw.rounds(3, 60) == [0, 0, 1]  # a new failure acts again
    assert sw.state.controls.sealed() is not None


async def test_heartbeat_probes_only_once_per_interval(make_switch: Any, beat: Beat) -> None:
    sw = make_switch(f"heartbeat: {{url: '{beat.url}', interval: 60, timeout: 1}}\n")
    await sw.rounds(6, 15)  # 90 s of rounds every 15 s: probes at 0 and 60
    assert beat.hits == 2


@pytest.mark.parametrize(
    ("status", "hang", "why"),
    [
        (302, False, "HTTP 302"),  # a redirect is not followed, and not a beat
        (307, False, "HTTP 307"),
        (101, False, "invalid answer"),  # an upgrade never asked for
        (404, False, "HTTP 404"),
        (200, True, "timeout"),
    ],
)
async def test_heartbeat_every_non_2xx_answer_is_a_miss(
    make_switch: Any, beat: Beat, status: int, *, hang: bool, why: str
) -> None:
    beat.status, beat.hang = status, hang
    sw = make_switch(f"heartbeat: {{url: '{beat.url}', interval: 1, timeout: 0.2, misses: 1}}\n")
    assert await sw.rounds(1, 1) == [1]
    assert why in sw.records("6e60")[0]["TURRET_REASON"]
    assert beat.hits == 1  # the redirect was not followed


async def test_heartbeat_connection_refused_is_a_miss(make_switch: Any) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sw = make_switch(f"heartbeat: {{url: 'http://127.0.0.1:{port}/', misses: 1}}\n")
    assert await sw.rounds(1, 60) == [1]
    assert "connection failed" in sw.records("6e60")[0]["TURRET_REASON"]


async def test_heartbeat_goes_through_the_address_policy(make_switch: Any, beat: Beat) -> None:
    port = beat.url.split(":")[2].split("/")[0]
    resolver = HostsResolver({"hb.example.org": [["127.0.0.1"]]})
    url = f"http://hb.example.org:{port}/ping"
    refused = make_switch(f"heartbeat: {{url: '{url}', misses: 1}}\n", resolver)
    assert await refused.rounds(1, 60) == [1] and beat.hits == 0
    assert "address refused" in refused.records("6e60")[0]["TURRET_REASON"]
    refused.state.controls.unseal()
    allowed = make_switch(
        f"heartbeat: {{url: '{url}', misses: 1, allow_networks: [127.0.0.0/8]}}\n", resolver
    )
    assert await allowed.rounds(1, 60) == [0] and beat.hits == 1


async def test_heartbeat_revoke_derived_revokes_every_token_and_does_not_seal(
    make_switch: Any, beat: Beat
) -> None:
    beat.status = 500
    sw = make_switch(f"heartbeat: {{url: '{beat.url}', misses: 1, on_failure: revoke_derived}}\n")
    now = sw.clock.now
    for i in range(3):
        sw.state.tokens.insert(
            NewToken(f"tok_{i:016x}", f"{i}" * 64, "alice", None, "{}", now, now + 600, None, False)
        )
    assert await sw.rounds(1, 60) == [1]
    assert sw.state.controls.sealed() is None and sw.state.tokens.in_force(now) == 0
    assert sw.records("6e60")[0]["TURRET_TOKENS_REVOKED"] == "3"
    assert {r["TURRET_TOKEN_ID"] for r in sw.records("6e32")} == {f"tok_{i:016x}" for i in range(3)}


async def test_checkin_late_seals_once_and_a_new_checkin_rearms(make_switch: Any) -> None:
    sw = make_switch("checkin: {max_interval: 1h}\n")
    start = sw.clock.now
    assert await sw.rounds(1, 3600) == [0]
    assert last_checkin(sw.state) == (start, "start")  # the clock starts at the first round
    assert await sw.rounds(1, 1) == [0]  # exactly an hour later: in time
    assert await sw.rounds(3, 60) == [1, 0, 0]
    seal = sw.state.controls.sealed()
    assert seal is not None and seal.by == "checkin" and "no checkin for 3601 s" in seal.reason
    record_checkin(sw.state, "uid:0", sw.clock.now)
    assert await sw.rounds(1, 3601) == [0] and sw.deadman.watch.fired == set()
    assert await sw.rounds(1, 60) == [1]  # late again: a new failure


async def test_checkin_fired_is_kept_across_a_restart(make_switch: Any) -> None:
    sw = make_switch("checkin: {max_interval: 1h, on_failure: revoke_derived}\n")
    record_checkin(sw.state, "uid:0", sw.clock.now - 7200)
    assert await sw.rounds(1, 60) == [1]
    again = make_switch("checkin: {max_interval: 1h, on_failure: revoke_derived}\n")
    again.clock.now = sw.clock.now
    assert await again.rounds(3, 60) == [0, 0, 0]  # the new process knows it already acted
    assert len(again.records("6e60")) == 1


async def test_a_watch_taken_out_and_put_back_acts_again(
    make_switch: Any, beat: Beat, creds_dir: Path
) -> None:
    beat.status = 500
    section = f"heartbeat: {{url: '{beat.url}', misses: 1}}\n"
    sw = make_switch(section)
    assert await sw.rounds(1, 60) == [1]
    sw.state.controls.unseal()
    holder = sw.deadman.holder
    failing = holder.current
    holder.current = build_runtime(load_config(BASE), str(creds_dir))  # a reload without it
    assert await sw.rounds(1, 60) == [0] and sw.deadman.watch.fired == set()
    holder.current = failing  # the reload that puts it back, still failing
    assert await sw.rounds(1, 60) == [1] and sw.state.controls.sealed() is not None


async def test_deadman_refuses_to_start_without_a_state_store(creds_dir: Path) -> None:
    for section in ("checkin: {}\n", "heartbeat: {url: 'https://x.example'}\n"):
        runtime = build_runtime(load_config(BASE + section), str(creds_dir))
        with pytest.raises(StartupError, match="state directory"):
            async with running(RuntimeHolder(runtime), None, Auditor(LineSink(2))):
                pass


async def test_deadman_running_probes_at_start(
    creds_dir: Path, state: StateStore, beat: Beat, tmp_path: Path
) -> None:
    runtime = build_runtime(
        load_config(BASE + f"heartbeat: {{url: '{beat.url}', interval: 60}}\n"), str(creds_dir)
    )
    auditor = Auditor(LineSink.open(str(tmp_path / "a.jsonl")))
    async with running(RuntimeHolder(runtime), state, auditor) as switch:
        async with asyncio.timeout(10):
            while beat.hits == 0:  # noqa: ASYNC110 - the round runs in the switch's own task
                await asyncio.sleep(0.01)
        assert switch.watch.misses == 0


class BrokenPool(SessionPool):
    """A session pool that fails in a way the probe does not expect (not an aiohttp error)."""

    def session_for(self, policy: Any) -> Any:
        raise RuntimeError("the resolver broke")


async def test_heartbeat_probe_failing_unexpectedly_counts_as_a_miss(
    tmp_path: Path, creds_dir: Path, state: StateStore, beat: Beat
) -> None:
    # Fail closed: a probe that cannot even be made is a miss, so the switch still fires.
    section = f"heartbeat: {{url: '{beat.url}', interval: 60, timeout: 1, misses: 2}}\n"
    runtime = build_runtime(load_config(BASE + section), str(creds_dir))
    pool = BrokenPool(HostsResolver({}))
    audit = tmp_path / "audit.jsonl"
    clock = Clock()
    auditor = Auditor(LineSink.open(str(audit)))
    deadman = DeadMan(RuntimeHolder(runtime), state, auditor, pool, clock)
    sw = Switch(deadman, clock, state, audit)
    try:
        assert await sw.rounds(2, 60) == [0, 1]
    finally:
        await pool.close()
    seal = state.controls.sealed()
    assert seal is not None and "probe failed (RuntimeError)" in seal.reason
