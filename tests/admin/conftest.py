"""A whole Turret in this process (`server.Gateway`, as `turret serve` runs it): the agents on a
unix socket and a TCP port, the admin socket, a state store, the fake upstream behind it.

`Served.restart()` stops it and starts a new one on the same config and state directory, as
`systemctl restart turret` would. Every audit record, answer and CLI output is checked for the
canaries and agent tokens when the test ends (`leak_check`, `no_leaks_in`).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import socket
import sys
import tempfile
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import Upstream, config_text
from tests.gateway import Canaries
from turret.audit import Auditor, LineSink
from turret.runtime import RuntimeHolder
from turret.server import Gateway, ServeOptions, _SignalQueue, load, open_state


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def eventually(condition: Callable[[], bool]) -> None:
    """Poll `condition` until it holds, for at most ten seconds."""
    async with asyncio.timeout(10):
        # The condition is state of another task (a server binding, the upstream's log) that
        # has no event to wait on.
        while not condition():  # noqa: ASYNC110
            await asyncio.sleep(0.01)


@dataclass
class Served:
    """Turret serving agents on `agents_unix` and `agents_tcp`, operators on `admin_socket`."""

    options: ServeOptions
    audit_path: Path
    token: str
    other_token: str
    creds: Canaries
    admin_socket: str
    agents_unix: str
    agents_tcp: str
    gateway: Gateway | None = None
    task: asyncio.Task[None] | None = None
    signals: _SignalQueue = field(default_factory=_SignalQueue)
    seen: list[str] = field(default_factory=list)

    async def start(self) -> None:
        """Start Turret; returns once all three sockets answer."""
        self.signals = _SignalQueue()
        auditor = Auditor(LineSink.open(str(self.audit_path)))
        state = open_state(self.options)
        self.gateway = Gateway(self.options, auditor, RuntimeHolder(load(self.options)), state)
        self.task = asyncio.create_task(self.gateway.run(self.signals))
        await eventually(lambda: len(self.gateway.addresses()) == 3 if self.gateway else False)

    async def stop(self) -> None:
        """SIGTERM, as systemd sends it; the state store is closed as `serve` closes it."""
        assert self.gateway is not None and self.task is not None
        self.signals._queue.put_nowait(signal.SIGTERM)
        await self.task
        if self.gateway.state is not None:
            self.gateway.state.close()
        self.gateway = self.task = None

    async def restart(self) -> None:
        await self.stop()
        await self.start()

    async def finish(self, leak_check: Canaries) -> None:
        """The end of a test: stopped if it still runs; no canary or agent token in any answer,
        CLI output or audit record; its sockets' directory removed."""
        if self.gateway is not None:
            await self.stop()
        seen = "\n".join(self.seen)
        leak_check.assert_absent(
            [("answers and CLI output", seen), ("audit", self.audit_path.read_text())]
        )
        shutil.rmtree(Path(self.admin_socket).parent, ignore_errors=True)

    async def agent(
        self, path: str, *, token: str | None = None, tcp: bool = False, method: str = "GET"
    ) -> tuple[int, Any]:
        """A request as an agent on the unix socket (or the TCP port): status and JSON."""
        headers = {"Authorization": f"Bearer {token or self.token}"} if token != "" else {}
        connector = aiohttp.TCPConnector() if tcp else aiohttp.UnixConnector(self.agents_unix)
        base = f"http://{self.agents_tcp}" if tcp else "http://turret"
        async with (
            aiohttp.ClientSession(connector=connector) as session,
            session.request(method, base + path, headers=headers) as resp,
        ):
            text = await resp.text()
            self.seen.append(text)
            return resp.status, json.loads(text) if text.startswith(("{", "[")) else text

    async def admin(self, method: str, path: str, body: object = None) -> tuple[int, Any]:
        """A request on the admin socket: status and JSON."""
        return await admin_request(self.admin_socket, self.seen, method, path, body)

    async def cli(self, *args: str) -> tuple[int, str, str]:
        """`turret ARGS --admin-socket SOCKET` in a child process: exit status, stdout, stderr."""
        return await admin_cli(self.admin_socket, self.seen, *args)

    def audit(self) -> list[dict[str, str]]:
        return [json.loads(line) for line in self.audit_path.read_text().splitlines()]


def write_served(
    directory: Path, upstream: Upstream, creds: Canaries, *, state: bool = True, admin: str = ""
) -> Served:
    """Write the config, credentials and directories of a `Served` (not started)."""
    token, other = creds.mint(), creds.mint()
    # A short path: unix socket paths are limited to 108 bytes, pytest's tmp paths are long.
    sockets = Path(tempfile.mkdtemp(prefix="turret-admin-"))
    agents_unix, admin_socket = str(sockets / "agents.sock"), str(sockets / "admin.sock")
    agents_tcp = f"127.0.0.1:{free_port()}"
    config = directory / "turret.yaml"
    config.write_text(
        config_text(upstream.url, token, other)
        + f"listen: [unix:{agents_unix}, {agents_tcp}]\n"
        + f"admin:\n  socket: {admin_socket}\n{admin}"
    )
    state_dir = directory / "state"
    state_dir.mkdir(mode=0o700)
    options = ServeOptions(
        str(config),
        str(creds.write(directory / "credentials")),
        shutdown_timeout=5,
        state_dir=str(state_dir) if state else None,
    )
    return Served(
        options, directory / "audit.jsonl", token, other, creds, admin_socket, agents_unix,
        agents_tcp,
    )  # fmt: skip


@pytest.fixture
async def served(
    upstream: Upstream, leak_check: Canaries, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Served]:
    """A running Turret with a state store; stopped and checked for leaks at the end."""
    monkeypatch.delenv("STATE_DIRECTORY", raising=False)
    monkeypatch.delenv("LISTEN_FDS", raising=False)
    s = write_served(tmp_path, upstream, leak_check)
    await s.start()
    yield s
    upstream.release.set()
    await s.finish(leak_check)


async def admin_request(
    admin_socket: str, seen: list[str], method: str, path: str, body: object = None
) -> tuple[int, Any]:
    """A request on the admin socket: status and JSON; the answer is added to `seen` (for the
    leak check)."""
    async with (
        aiohttp.ClientSession(connector=aiohttp.UnixConnector(admin_socket)) as session,
        session.request(method, f"http://turret{path}", json=body) as resp,
    ):
        text = await resp.text()
        seen.append(text)
        return resp.status, json.loads(text)


async def admin_cli(admin_socket: str, seen: list[str], *args: str) -> tuple[int, str, str]:
    """`turret ARGS --admin-socket SOCKET` in a child process: exit status, stdout, stderr; both
    outputs are added to `seen` (for the leak check)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "turret", *args, "--admin-socket", admin_socket,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await proc.communicate()
    seen += [out.decode(), err.decode()]
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()
