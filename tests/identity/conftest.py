"""A whole Turret (`server.Gateway`) whose agents' config carries `bind:` settings, served on a
unix socket and a TCP port (`tests.admin.conftest.Served`), and requests from other uids."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.admin.conftest import Served, write_served
from tests.conftest import Upstream
from tests.gateway import Canaries

Serve = Callable[..., Awaitable[Served]]
SYSTEM_PYTHON = "/usr/bin/python3"  # readable by any uid, unlike the shared venv
# A request as another uid: the token on stdin (never in a command line), the answer on stdout.
CHILD = """
import socket, sys
token = sys.stdin.readline().strip()
s = socket.socket(socket.AF_UNIX)
s.settimeout(10)
s.connect(sys.argv[1])
s.sendall(f"GET /v1/whoami HTTP/1.1\\r\\nHost: t\\r\\nAuthorization: Bearer {token}\\r\\n"
          "Connection: close\\r\\n\\r\\n".encode())
data = b""
while chunk := s.recv(65536):
    data += chunk
sys.stdout.write(data.decode())
"""


def with_settings(config: Path, opencode: str = "", rest: str = "") -> None:
    """Add lines to the `opencode` agent of a `Served` config, and top-level text after it."""
    text = config.read_text()
    text = re.sub(r"(  opencode:\n    token_sha256: \S+\n)", lambda m: m[1] + opencode, text)
    config.write_text(text + rest)


@pytest.fixture
async def serve(
    upstream: Upstream, leak_check: Canaries, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Serve]:
    """Start a Turret whose `opencode` agent gets `opencode` settings; stopped and checked for
    leaks at the end."""
    monkeypatch.delenv("STATE_DIRECTORY", raising=False)
    monkeypatch.delenv("LISTEN_FDS", raising=False)
    started: list[Served] = []

    async def start(opencode: str = "", rest: str = "") -> Served:
        s = write_served(tmp_path, upstream, leak_check)
        with_settings(Path(s.options.config_path), opencode, rest)
        await s.start()
        started.append(s)
        return s

    yield start
    upstream.release.set()
    for s in started:
        await s.finish(leak_check)


async def mint(served: Served, token: str, *, tcp: bool = False) -> dict[str, Any]:
    """`POST /v1/tokens` (a token that may derive) on the unix socket (or TCP) with `token`:
    the JSON answer; a minted token joins the leak check's secrets."""
    connector = aiohttp.TCPConnector() if tcp else aiohttp.UnixConnector(served.agents_unix)
    base = f"http://{served.agents_tcp}" if tcp else "http://turret"
    headers = {"Authorization": f"Bearer {token}"}
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.post(
            base + "/v1/tokens", json={"ttl": "15m", "may_derive": True}, headers=headers
        ) as resp,
    ):
        answer: dict[str, Any] = json.loads(await resp.text())
    if resp.status == 201:
        served.creds.tokens.append(answer["token"])
    # The one answer that shows a token, by design: checked for every other secret.
    served.seen.append(json.dumps({k: v for k, v in answer.items() if k != "token"}))
    return answer


async def as_user(uid: int, socket_path: str, token: str) -> tuple[int, dict[str, Any]]:
    """`GET /v1/whoami` with `token` from a process of `uid`: the status and JSON answer."""
    proc = await asyncio.create_subprocess_exec(
        SYSTEM_PYTHON, "-c", CHILD, socket_path, user=uid, group=uid, extra_groups=[],
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, _ = await proc.communicate((token + "\n").encode())
    assert proc.returncode == 0
    head, _, body = out.decode().partition("\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


def open_to_everyone(served: Served) -> None:
    """Let any uid connect to the agents' socket (the binding is then all that is left)."""
    Path(served.agents_unix).parent.chmod(0o711)
    Path(served.agents_unix).chmod(0o666)
