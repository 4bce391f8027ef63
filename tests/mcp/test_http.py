"""`turret mcp --listen`: Streamable HTTP, one bridge for many agents, each by its own bearer."""

from __future__ import annotations

import signal
from collections.abc import AsyncIterator

import httpx2
import pytest
from mcp import Client

from tests.capabilities.conftest import CapGateway
from tests.mcp.conftest import Recorder, assert_no_secrets, bridge_args, http
from tests.mcp.process import Bridge, spawn
from turret.auth import new_token

MODES = ["legacy", "2026-07-28"]


@pytest.fixture
async def listening(mcpgw: CapGateway) -> AsyncIterator[tuple[Bridge, str]]:
    """A bridge on a loopback port of its own choosing, and its URL."""
    bridge = await spawn(bridge_args(mcpgw, "--listen", "127.0.0.1:0"), {})
    line = await bridge.line_with("serving Streamable HTTP on ")
    yield bridge, line.rsplit(" ", 1)[1].strip()
    bridge.proc.send_signal(signal.SIGTERM)
    assert await bridge.finish() == 0
    assert_no_secrets(mcpgw, [bridge.stderr])


@pytest.mark.parametrize("mode", MODES)
async def test_http_each_agent_sees_its_own_tools(
    mcpgw: CapGateway, rec: Recorder, listening: tuple[Bridge, str], mode: str
) -> None:
    _, url = listening
    async with Client(http(url, rec, mcpgw.tokens["opencode"]), mode=mode, cache=None) as c:
        mine = {t.name for t in (await c.list_tools()).tools}
        ok = await c.call_tool("qbit__list_torrents", {})
        assert not ok.is_error
    async with Client(http(url, rec, mcpgw.tokens["ops/alice"]), mode=mode, cache=None) as c:
        theirs = {t.name for t in (await c.list_tools()).tools}
        refused = await c.call_tool("chat__send_message", {"room_id": "!ops:example.org"})
        assert refused.is_error and "Turret refused" in "".join(
            getattr(b, "text", "") for b in refused.content
        )
    assert "chat__send_message" in mine and "turret_http" in mine
    assert "chat__send_message" not in theirs and "turret_http" not in theirs
    assert "pve__pct_status" in theirs


@pytest.mark.parametrize("auth", [None, "Bearer " + "turret_" + "A" * 43, "Basic eDp5"])
async def test_http_without_a_good_bearer_is_401(
    listening: tuple[Bridge, str], auth: str | None
) -> None:
    _, url = listening
    headers = {"Accept": "application/json, text/event-stream"}
    if auth:
        headers["Authorization"] = auth
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
    async with httpx2.AsyncClient() as client:
        resp = await client.post(url, json=body, headers=headers)
    assert resp.status_code == 401


@pytest.mark.parametrize("addr", ["0.0.0.0:0", "[::]:0", "192.0.2.1:0", "example.org:80"])
async def test_http_non_loopback_refused_without_allow_remote(addr: str) -> None:
    bridge = await spawn(["-m", "turret", "mcp", "--listen", addr], {"TURRET_TOKEN": new_token()})
    assert await bridge.finish() != 0
    assert "--allow-remote" in bridge.stderr
