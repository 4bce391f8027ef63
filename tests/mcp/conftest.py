"""`turret mcp` under test: a real Turret (the capability gateway and its fake services), the
bridge as a subprocess, and the SDK's own clients, with every MCP message recorded.

When a test ends, no canary credential, issued session cookie or agent token may be in any
recorded MCP message or in the bridge's stderr, and the gateway passes its own leak check.
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Self, TextIO, cast

import anyio
import httpx2
import pytest
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.message import SessionMessage

from tests.capabilities.conftest import CapGateway, capability_config, make_capability_gateway
from tests.gateway import Canaries
from turret.config import load_config
from turret.providers.build import build_runtime
from turret.web.keys import CONTEXT

ROOT = Path(__file__).resolve().parents[2]
RELOAD_GROUP = "  mcp-reload:\n    agents: [opencode]\n    capabilities: [push.note]\n"


class Recorder:
    """Every MCP message both ways, as JSON text, and the bridge's stderr file."""

    def __init__(self) -> None:
        self.messages: list[str] = []
        # Closed at teardown; a real file, because the bridge's stderr is its descriptor.
        self.stderr = cast(TextIO, tempfile.TemporaryFile("w+"))  # noqa: SIM115

    def stderr_text(self) -> str:
        self.stderr.flush()
        self.stderr.seek(0)
        return self.stderr.read()

    def saw(self, fragment: str) -> bool:
        return any(fragment in m for m in self.messages)


class _Read:
    def __init__(self, inner: Any, rec: Recorder) -> None:
        self._inner, self._rec = inner, rec

    async def receive(self) -> SessionMessage | Exception:
        item = await self._inner.receive()
        self._rec.messages.append(
            item.message.model_dump_json() if isinstance(item, SessionMessage) else repr(item)
        )
        return item  # type: ignore[no-any-return]

    async def aclose(self) -> None:
        await self._inner.aclose()

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> SessionMessage | Exception:
        try:
            return await self.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            raise StopAsyncIteration from None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


class _Write:
    def __init__(self, inner: Any, rec: Recorder) -> None:
        self._inner, self._rec = inner, rec

    async def send(self, item: SessionMessage, /) -> None:
        self._rec.messages.append(item.message.model_dump_json())
        await self._inner.send(item)

    async def aclose(self) -> None:
        await self._inner.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


@asynccontextmanager
async def recorded(transport: Any, rec: Recorder) -> AsyncIterator[tuple[Any, Any]]:
    """`transport` (a client transport context) with both of its streams recorded."""
    async with transport as (read, write):
        yield _Read(read, rec), _Write(write, rec)


def bridge_args(gw: CapGateway, *extra: str) -> list[str]:
    """`python -m turret mcp --url <the gateway>` and `extra`."""
    url = str(gw.client.make_url("")).rstrip("/")
    return ["-m", "turret", "mcp", "--url", url, *extra]


def stdio(gw: CapGateway, rec: Recorder, *extra: str, agent: str = "opencode") -> Any:
    """A recorded stdio transport to a `turret mcp` subprocess holding `agent`'s token."""
    params = StdioServerParameters(
        command=sys.executable,
        args=bridge_args(gw, "--poll", "0.05", *extra),
        env={"TURRET_TOKEN": gw.tokens[agent]},
        cwd=ROOT,
    )
    return recorded(stdio_client(params, errlog=rec.stderr), rec)


@asynccontextmanager
async def http(url: str, rec: Recorder, token: str) -> AsyncIterator[tuple[Any, Any]]:
    """A recorded Streamable HTTP transport to `url` with `token` as the bearer."""
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx2.AsyncClient(headers=headers, timeout=30) as client:
        transport = streamable_http_client(url, http_client=client)
        async with recorded(transport, rec) as streams:
            yield streams


def reload_with_grant(gw: CapGateway, tmp_path: Path) -> None:
    """Swap Turret's runtime for one whose config also grants opencode `push.note`."""
    app = gw.client.app
    assert app is not None
    holder = app[CONTEXT].holder
    config = holder.current.config
    urls = {s.kind: s.url for s in config.services.values() if s.kind}
    text = capability_config(urls, gw.tokens, RELOAD_GROUP)
    holder.current = build_runtime(load_config(text), str(tmp_path / "credentials"))


def assert_clean(gw: CapGateway, rec: Recorder) -> None:
    """No credential, issued cookie or agent token in any MCP message or the bridge's stderr."""
    assert_no_secrets(gw, [rec.stderr_text(), *rec.messages])


def assert_no_secrets(gw: CapGateway, texts: list[str]) -> None:
    """No credential, issued cookie or agent token, in any encoding, in any of `texts`."""
    gw.creds.assert_absent(("MCP text", text) for text in texts)


@pytest.fixture
async def mcpgw(tmp_path: Path, leak_check: Canaries) -> AsyncIterator[CapGateway]:
    """The capability gateway, checked for leaks when the test ends."""
    gateway, servers = await make_capability_gateway(tmp_path, creds=leak_check)
    yield gateway
    await gateway.client.close()
    for server in servers:
        await server.close()


@pytest.fixture
def rec(mcpgw: CapGateway) -> Iterator[Recorder]:
    """The recorder of one test; its messages and stderr are leak-checked at teardown."""
    recorder = Recorder()
    yield recorder
    assert_clean(mcpgw, recorder)
    recorder.stderr.close()
