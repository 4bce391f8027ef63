"""`turret serve` as a real process, driven the way systemd drives it, without systemd.

The test reads sd_notify messages from its own NOTIFY_SOCKET, sends SIGHUP and SIGTERM, starts
Turret under systemd-socket-activate, and proxies to a real fake upstream whose slow endpoint
waits for an event the test sets.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import shutil
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

CANARY_UPSTREAM_V1 = "canary-upstream-v1-7f3c9a"
CANARY_UPSTREAM_V2 = "canary-upstream-v2-51d0e8"
CANARY_AGENT = "canary-agent-token-c2b6f4"
CANARIES = (CANARY_UPSTREAM_V1, CANARY_UPSTREAM_V2, CANARY_AGENT)
WAIT = 15.0  # bound on every wait for a condition


# --- the fake upstream -----------------------------------------------------------------------


@dataclass
class Upstream:
    """Answers which canary credential it was sent; /slow waits until the test releases it."""

    url: str
    entered: asyncio.Event = field(default_factory=asyncio.Event)
    release: asyncio.Event = field(default_factory=asyncio.Event)


def which_credential(request: web.Request) -> str:
    sent = request.headers.get("Authorization", "")
    names = {f"Bearer {CANARY_UPSTREAM_V1}": "v1", f"Bearer {CANARY_UPSTREAM_V2}": "v2"}
    return names.get(sent, "none")


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    app = web.Application()
    state = Upstream("")

    async def ping(request: web.Request) -> web.Response:
        return web.json_response({"credential": which_credential(request)})

    async def slow(request: web.Request) -> web.Response:
        state.entered.set()
        await state.release.wait()
        return web.json_response({"credential": which_credential(request)})

    app.router.add_get("/ping", ping)
    app.router.add_get("/other", ping)
    app.router.add_get("/slow", slow)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    state.url = str(server.make_url("")).rstrip("/")
    yield state
    state.release.set()
    await server.close()


# --- sd_notify -------------------------------------------------------------------------------


class NotifySocket:
    """The test's stand-in for systemd's notification socket."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.setblocking(False)
        self.messages: list[tuple[float, list[str]]] = []

    async def expect(self, line: str) -> list[str]:
        """The next datagram that contains `line` (earlier ones are kept in `messages`)."""
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(WAIT):
            while True:
                data = await loop.sock_recv(self.sock, 65536)
                lines = data.decode().split("\n")
                self.messages.append((time.monotonic(), lines))
                if line in lines:
                    return lines

    def drain(self) -> list[list[str]]:
        """Every datagram that arrived and was not read yet."""
        while True:
            try:
                data = self.sock.recv(65536)
            except BlockingIOError:
                return [lines for _, lines in self.messages]
            self.messages.append((time.monotonic(), data.decode().split("\n")))


def status_of(lines: list[str]) -> str:
    return next(x.removeprefix("STATUS=") for x in lines if x.startswith("STATUS="))


# --- Turret as a process ---------------------------------------------------------------------


@dataclass
class Turret:
    dir: Path
    upstream: Upstream
    notify: NotifySocket
    proc: asyncio.subprocess.Process | None = None
    grants: tuple[str, ...] = ("/ping", "/slow")
    shutdown_timeout: float = 10
    state_dir: Path | None = None

    @property
    def config(self) -> Path:
        return self.dir / "turret.yaml"

    @property
    def sock(self) -> str:
        return str(self.dir / "turret.sock")

    def write_config(self, listen: str = "", *, broken: bool = False) -> None:
        paths = ", ".join(f'"{p}"' for p in self.grants)
        self.config.write_text(
            f"listen: [{listen or 'unix:' + self.sock}]\n"
            f"services:\n  api:\n    url: {self.upstream.url}\n    auth: {{bearer: api-token}}\n"
            f"agents:\n  ci-bot:\n    token_credential: agent-token\n"
            f"    proxy:\n      - service: api\n        methods: [GET]\n"
            f"        paths: [{paths}]\n" + ("    bogus: key\n" if broken else "")
        )

    def write_credential(self, name: str, value: str) -> None:
        (self.dir / "creds").mkdir(exist_ok=True)
        (self.dir / "creds" / name).write_text(value + "\n")

    async def start(self, *args: str, env: dict[str, str] | None = None) -> None:
        inherited = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("WATCHDOG_", "LISTEN_", "STATE_DIRECTORY"))
        }
        environ = {**inherited, "NOTIFY_SOCKET": str(self.notify.path), **(env or {})}
        command = [sys.executable, "-m", "turret", "serve", *self.serve_args()]
        with (self.dir / "stdout").open("wb") as out, (self.dir / "stderr").open("wb") as err:
            self.proc = await asyncio.create_subprocess_exec(
                *args, *command, env=environ, stdout=out, stderr=err
            )

    def serve_args(self) -> list[str]:
        return [
            "--config",
            str(self.config),
            "--credentials-dir",
            str(self.dir / "creds"),
            "--audit-file",
            str(self.dir / "audit.jsonl"),
            "--shutdown-timeout",
            str(self.shutdown_timeout),
            *(["--state-dir", str(self.state_dir)] if self.state_dir else []),
        ]

    def signal(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    async def exit_code(self) -> int:
        assert self.proc is not None
        async with asyncio.timeout(WAIT):
            return await self.proc.wait()

    def audit(self) -> list[dict[str, str]]:
        path = self.dir / "audit.jsonl"
        lines = path.read_text().splitlines() if path.exists() else []
        return [json.loads(line) for line in lines]

    def events(self) -> list[str]:
        return [r["TURRET_EVENT"] for r in self.audit()]

    def everything_written(self) -> str:
        """Logs, audit trail and every notification: where no canary may ever appear."""
        texts = [(self.dir / n).read_text() for n in ("stdout", "stderr", "audit.jsonl")]
        texts.extend("\n".join(lines) for lines in self.notify.drain())
        return "\n".join(texts)


@pytest.fixture
async def turret(tmp_path: Path, upstream: Upstream) -> AsyncIterator[Turret]:
    # AF_UNIX paths are short: keep the socket directory short too.
    short = Path(tmp_path)
    t = Turret(short, upstream, NotifySocket(short / "notify"))
    t.write_credential("api-token", CANARY_UPSTREAM_V1)
    t.write_credential("agent-token", CANARY_AGENT)
    t.write_config()
    (short / "audit.jsonl").touch()
    yield t
    if t.proc is not None and t.proc.returncode is None:
        t.proc.kill()
        await t.proc.wait()
    written = t.everything_written()
    t.notify.sock.close()
    for canary in CANARIES:
        assert canary not in written


async def get(
    path: str, *, unix: str | None = None, url: str = "http://turret"
) -> tuple[int, dict[str, object]]:
    """GET through Turret as the agent; the status and JSON body, checked for canaries."""
    connector = aiohttp.UnixConnector(unix) if unix else aiohttp.TCPConnector()
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.get(url + path, headers={"Authorization": f"Bearer {CANARY_AGENT}"}) as resp,
    ):
        text = await resp.text()
        for canary in CANARIES:
            assert canary not in text
            assert all(canary not in v for v in resp.headers.values())
        return resp.status, json.loads(text)


async def started(t: Turret, *args: str, env: dict[str, str] | None = None) -> list[str]:
    await t.start(*args, env=env)
    return await t.notify.expect("READY=1")


async def eventually(condition: Callable[[], bool]) -> None:
    """Poll a condition another process makes true; there is no event to wait on."""
    async with asyncio.timeout(WAIT):
        while not condition():  # noqa: ASYNC110 - the condition is in another process
            await asyncio.sleep(0.02)


# --- tests -----------------------------------------------------------------------------------


async def test_serve_ready_only_after_config_and_credentials(turret: Turret) -> None:
    ready = await started(turret)
    assert turret.events() == ["started"]  # everything loaded before READY=1
    assert status_of(ready).startswith("1 agents, 1 services; 0 requests served")
    assert await get("/v1/proxy/api/ping", unix=turret.sock) == (200, {"credential": "v1"})
    turret.signal(signal.SIGTERM)
    assert await turret.exit_code() == 0


async def test_serve_refuses_to_start_without_a_credential(turret: Turret) -> None:
    (turret.dir / "creds" / "api-token").unlink()
    await turret.start()
    assert await turret.exit_code() == 78
    assert not any("READY=1" in lines for lines in turret.notify.drain())
    assert turret.events() == ["config_error"]


async def test_serve_feeds_the_watchdog_at_half_the_period(turret: Turret) -> None:
    await started(turret, env={"WATCHDOG_USEC": "600000"})
    async with asyncio.timeout(2):
        for _ in range(4):
            await turret.notify.expect("WATCHDOG=1")
    pings = [at for at, lines in turret.notify.messages if "WATCHDOG=1" in lines]
    gaps = [b - a for a, b in itertools.pairwise(pings)]
    # 0.3 s apart, well inside the 0.6 s period systemd would kill at.
    assert all(0.2 < gap < 0.55 for gap in gaps), gaps
    turret.signal(signal.SIGTERM)
    assert await turret.exit_code() == 0


async def test_serve_sighup_reload_swaps_config_and_keeps_requests_in_flight(
    turret: Turret, upstream: Upstream
) -> None:
    await started(turret)
    assert (await get("/v1/proxy/api/other", unix=turret.sock))[0] == 403
    slow = asyncio.create_task(get("/v1/proxy/api/slow", unix=turret.sock))
    async with asyncio.timeout(WAIT):
        await upstream.entered.wait()

    turret.grants = ("/ping", "/slow", "/other")
    turret.write_config()
    turret.write_credential("api-token", CANARY_UPSTREAM_V2)
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    turret.signal(signal.SIGHUP)
    reloading = await turret.notify.expect("RELOADING=1")
    # RELOADING=1 and MONOTONIC_USEC= arrive in one datagram, stamped after the signal was sent.
    stamp = int(next(x for x in reloading if x.startswith("MONOTONIC_USEC=")).split("=")[1])
    assert before <= stamp <= time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    ready = await turret.notify.expect("READY=1")
    assert "last reload: ok at" in status_of(ready)

    assert await get("/v1/proxy/api/other", unix=turret.sock) == (200, {"credential": "v2"})
    assert not slow.done()
    upstream.release.set()
    # The request that started before the reload finished on the configuration it started with.
    assert await slow == (200, {"credential": "v1"})
    assert turret.events().count("reloaded") == 1
    turret.signal(signal.SIGTERM)
    assert await turret.exit_code() == 0


async def test_serve_failed_reload_keeps_serving_and_says_so(turret: Turret) -> None:
    await started(turret)
    turret.write_config(broken=True)
    turret.signal(signal.SIGHUP)
    await turret.notify.expect("RELOADING=1")
    status = status_of(await turret.notify.expect("READY=1"))
    assert "last reload: FAILED at" in status
    assert "agents.ci-bot.bogus: unknown key; still serving the previous one" in status
    assert await get("/v1/proxy/api/ping", unix=turret.sock) == (200, {"credential": "v1"})
    failed = [r for r in turret.audit() if r["TURRET_EVENT"] == "reload_failed"]
    assert len(failed) == 1
    assert "agents.ci-bot.bogus" in failed[0]["TURRET_REASON"]

    (turret.dir / "creds" / "api-token").unlink()
    turret.write_config()
    turret.signal(signal.SIGHUP)
    status = status_of(await turret.notify.expect("READY=1"))
    assert "invalid credentials: credential 'api-token' is missing" in status
    assert await get("/v1/proxy/api/ping", unix=turret.sock) == (200, {"credential": "v1"})
    turret.signal(signal.SIGTERM)
    assert await turret.exit_code() == 0


async def test_serve_sigterm_lets_the_request_in_flight_finish(
    turret: Turret, upstream: Upstream
) -> None:
    await started(turret)
    slow = asyncio.create_task(get("/v1/proxy/api/slow", unix=turret.sock))
    async with asyncio.timeout(WAIT):
        await upstream.entered.wait()
    turret.signal(signal.SIGTERM)
    stopping = await turret.notify.expect("STOPPING=1")
    assert status_of(stopping).startswith("stopping; 1 agents, 1 services; 0 requests served, 1")
    with pytest.raises(aiohttp.ClientConnectionError):  # no longer accepting
        await get("/v1/proxy/api/ping", unix=turret.sock)
    assert turret.proc is not None and turret.proc.returncode is None
    upstream.release.set()
    assert await slow == (200, {"credential": "v1"})
    assert await turret.exit_code() == 0
    assert turret.events()[-1] == "stopped"


async def test_serve_shutdown_timeout_bounds_the_wait(turret: Turret, upstream: Upstream) -> None:
    turret.shutdown_timeout = 0.5
    await started(turret)
    slow = asyncio.create_task(get("/v1/proxy/api/slow", unix=turret.sock))
    async with asyncio.timeout(WAIT):
        await upstream.entered.wait()
    turret.signal(signal.SIGTERM)
    assert await turret.exit_code() == 0  # after 0.5 s, though the request never finished
    with pytest.raises(aiohttp.ClientError):
        await slow


ACTIVATE = shutil.which("systemd-socket-activate")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.skipif(ACTIVATE is None, reason="systemd-socket-activate not found")
async def test_serve_socket_activated_on_tcp_and_unix_both_named_agents_ignores_listen(
    turret: Turret,
) -> None:
    assert ACTIVATE is not None
    port, unused = free_port(), free_port()
    turret.write_config(listen=f"127.0.0.1:{unused}")
    agents = str(turret.dir / "agents.sock")
    await turret.start(
        ACTIVATE,
        "-l",
        f"127.0.0.1:{port}",
        "-l",
        agents,
        "--fdname=agents:agents",
        f"--setenv=NOTIFY_SOCKET={turret.notify.path}",
    )
    await eventually(lambda: Path(agents).exists())
    assert turret.events() == []  # not started before the first connection
    # The first connection starts Turret, which then answers it.
    first = asyncio.create_task(get("/v1/proxy/api/ping", url=f"http://127.0.0.1:{port}"))
    await turret.notify.expect("READY=1")
    assert await first == (200, {"credential": "v1"})
    assert await get("/v1/proxy/api/ping", unix=agents) == (200, {"credential": "v1"})
    listen = turret.audit()[0]["TURRET_LISTEN"]
    assert listen == f"127.0.0.1:{port} unix:{agents}"
    with pytest.raises(aiohttp.ClientConnectionError):
        await get("/v1/proxy/api/ping", url=f"http://127.0.0.1:{unused}")
    turret.signal(signal.SIGTERM)
    assert await turret.exit_code() == 0


@pytest.mark.skipif(ACTIVATE is None, reason="systemd-socket-activate not found")
@pytest.mark.parametrize(
    ("fdnames", "stranger"),
    [
        (["--fdname=turret.socket:turret.socket"], "turret.socket"),  # systemd's default name
        ([], "unknown"),  # no LISTEN_FDNAMES at all
        (["--fdname=agents:metrics"], "metrics"),  # one stranger refuses the agents' socket too
    ],
)
async def test_serve_socket_activated_under_an_unknown_name_refuses_to_start(
    turret: Turret, fdnames: list[str], stranger: str
) -> None:
    assert ACTIVATE is not None
    port, agents = free_port(), str(turret.dir / "agents.sock")
    await turret.start(
        ACTIVATE, "-l", f"127.0.0.1:{port}", "-l", agents, *fdnames,
        f"--setenv=NOTIFY_SOCKET={turret.notify.path}",
    )  # fmt: skip
    await eventually(lambda: Path(agents).exists())
    # The first connection starts Turret, which refuses before it answers anything.
    with pytest.raises(aiohttp.ClientError):
        await get("/v1/proxy/api/ping", url=f"http://127.0.0.1:{port}")
    assert await turret.exit_code() == 78
    assert not any("READY=1" in lines for lines in turret.notify.drain())
    stderr = (turret.dir / "stderr").read_text()
    assert f"is named {stranger!r}" in stderr
    assert "FileDescriptorName= must be one of: admin, agents" in stderr
    (record,) = turret.audit()
    assert record["TURRET_EVENT"] == "config_error"
    assert record["MESSAGE"] == "refusing to start: cannot listen"
    assert f"is named {stranger!r}" in record["TURRET_REASON"]


@pytest.mark.parametrize("given_by", ["--state-dir", "STATE_DIRECTORY"])
async def test_serve_opens_the_state_store_and_closes_it_on_stop(
    turret: Turret, given_by: str
) -> None:
    state = turret.dir / "state"
    state.mkdir(mode=0o700)
    if given_by == "--state-dir":
        turret.state_dir = state
        await started(turret)
    else:
        # systemd's StateDirectory= sets a list; Turret's directory is the first.
        await started(turret, env={"STATE_DIRECTORY": f"{state}:{turret.dir / 'other'}"})
    assert oct((state / "turret.db").stat().st_mode & 0o777) == "0o600"
    assert (state / "turret.db-wal").exists()  # open, in WAL mode
    assert await get("/v1/proxy/api/ping", unix=turret.sock) == (200, {"credential": "v1"})
    turret.signal(signal.SIGTERM)
    assert await turret.exit_code() == 0
    # Closed: the last connection out folds the WAL back into the database and removes it.
    assert sorted(p.name for p in state.iterdir()) == ["fingerprint.key", "turret.db"]
    for path in state.iterdir():
        for canary in CANARIES:
            assert canary.encode() not in path.read_bytes()
    assert "no state directory configured" not in (turret.dir / "stderr").read_text()


async def test_serve_without_a_state_directory_runs_and_says_so_once(turret: Turret) -> None:
    await started(turret)
    assert await get("/v1/proxy/api/ping", unix=turret.sock) == (200, {"credential": "v1"})
    turret.signal(signal.SIGTERM)
    assert await turret.exit_code() == 0
    assert (turret.dir / "stderr").read_text().count("no state directory configured") == 1


async def test_serve_warns_at_start_of_an_expired_agent_token(turret: Turret) -> None:
    text = turret.config.read_text()
    turret.config.write_text(
        text.replace(
            "    token_credential: agent-token\n",
            "    token_credential: agent-token\n    expires: 2001-02-03\n",
        )
    )
    await started(turret)
    (record,) = [r for r in turret.audit() if r["TURRET_EVENT"] == "agent_token_expired"]
    assert record["TURRET_AGENT"] == "ci-bot" and record["PRIORITY"] == "3"
    assert record["TURRET_EXPIRES"].startswith("2001-02-03")
    # The expired token itself is refused (401 token_expired); the record told the operator.
    status, body = await get("/v1/whoami", unix=turret.sock)
    error = body["error"]
    assert status == 401 and isinstance(error, dict) and error["code"] == "token_expired"
    turret.signal(signal.SIGTERM)
    assert await turret.exit_code() == 0
