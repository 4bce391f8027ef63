"""`turret mcp` over stdio, end to end: the SDK's client, the bridge subprocess, a real Turret
in front of fake services. Both protocol generations the SDK serves are exercised."""

from __future__ import annotations

import json
from typing import Any

import anyio
import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError

from tests.capabilities.conftest import CapGateway
from tests.mcp.conftest import Recorder, reload_with_grant, stdio

MODES = ["legacy", "2026-07-28"]  # the initialize handshake, and the sessionless form


async def turret_listing(gw: CapGateway, agent: str = "opencode") -> dict[str, Any]:
    resp = await gw.client.get("/v1/capabilities", headers=gw.auth(agent))
    return {c["name"]: c for c in (await resp.json())["capabilities"]}


async def turret_error_code(gw: CapGateway, name: str, params: Any) -> str:
    resp = await gw.call(name, params)
    return str((await resp.json())["error"]["code"])


def text_of(result: Any) -> str:
    return "".join(getattr(c, "text", "") for c in result.content)


@pytest.mark.parametrize("mode", MODES)
async def test_stdio_lists_the_agents_own_narrowed_tools(
    mcpgw: CapGateway, rec: Recorder, mode: str
) -> None:
    listing = await turret_listing(mcpgw)
    async with Client(stdio(mcpgw, rec), mode=mode, cache=None) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
    expected = {name.replace(".", "__") for name in listing} | {"turret_http", "turret_explain"}
    assert set(tools) == expected
    assert "qbit__add_torrent" not in tools  # denied to this agent
    assert "push__note" not in tools  # never granted
    for name, cap in listing.items():
        tool = tools[name.replace(".", "__")]
        assert tool.input_schema == cap["parameters"]
        assert tool.description == cap["description"]
    room: Any = tools["chat__send_message"].input_schema["properties"]
    room = room["room_id"]
    assert "!ops:example.org" in json.dumps(room)  # the grant's narrowing, as Turret gives it
    http_schema = tools["turret_http"].input_schema["properties"]
    assert http_schema["service"]["enum"] == ["qbit"]


@pytest.mark.parametrize("mode", MODES)
async def test_stdio_call_succeeds_refusals_and_bad_arguments_are_tool_errors(
    mcpgw: CapGateway, rec: Recorder, mode: str
) -> None:
    denied_room = {"room_id": "!other:example.org", "body": "hi"}
    bad_args = {"room_id": "!ops:example.org", "nope": 1}
    denied_code = await turret_error_code(mcpgw, "chat.send_message", denied_room)
    bad_code = await turret_error_code(mcpgw, "chat.send_message", bad_args)
    async with Client(stdio(mcpgw, rec), mode=mode, cache=None) as client:
        ok = await client.call_tool(
            "chat__send_message", {"room_id": "!ops:example.org", "body": "from mcp"}
        )
        assert not ok.is_error
        assert ok.structured_content is not None
        sent: Any = mcpgw.fakes.messages["!ops:example.org"][0]["content"]
        assert sent["body"] == "from mcp"

        refused = await client.call_tool("chat__send_message", denied_room)
        assert refused.is_error and denied_code in text_of(refused)
        bad = await client.call_tool("chat__send_message", bad_args)
        assert bad.is_error and bad_code in text_of(bad)
        absent = await client.call_tool("qbit__add_torrent", {"urls": "magnet:?xt=1"})
        assert absent.is_error and "Turret refused" in text_of(absent)
        unknown = await client.call_tool("no such/tool", {})
        assert unknown.is_error
        # The session is still there after every refusal.
        assert not (await client.call_tool("qbit__list_torrents", {})).is_error


@pytest.mark.parametrize("mode", MODES)
async def test_stdio_http_and_explain_tools(mcpgw: CapGateway, rec: Recorder, mode: str) -> None:
    async with Client(stdio(mcpgw, rec), mode=mode, cache=None) as client:
        got = await client.call_tool(
            "turret_http", {"method": "GET", "service": "qbit", "path": "/api/v2/torrents/info"}
        )
        assert not got.is_error
        assert got.structured_content and got.structured_content["status"] == 200
        denied = await client.call_tool(
            "turret_http", {"method": "GET", "service": "qbit", "path": "/api/v2/app/preferences"}
        )
        assert denied.is_error and "Turret refused" in text_of(denied)
        shape = await client.call_tool("turret_http", {"method": "BREW", "service": "qbit"})
        assert shape.is_error and "method" in text_of(shape)
        proxy = {"service": "qbit", "method": "GET", "path": "/api/v2/app/preferences"}
        why = await client.call_tool("turret_explain", proxy)
        assert not why.is_error and text_of(why).startswith("denied")
        params = {"room_id": "!ops:example.org", "body": "x"}
        ok = {"capability": "chat__send_message", "params": params}
        assert text_of(await client.call_tool("turret_explain", ok)).startswith("allowed")


async def test_stdio_without_the_optional_tools(mcpgw: CapGateway, rec: Recorder) -> None:
    async with Client(stdio(mcpgw, rec, "--no-http", "--no-explain"), cache=None) as client:
        names = {t.name for t in (await client.list_tools()).tools}
        assert "turret_http" not in names and "turret_explain" not in names
        off = await client.call_tool(
            "turret_http", {"method": "GET", "service": "qbit", "path": "/"}
        )
        assert off.is_error


async def test_stdio_no_proxy_grants_no_http_tool(mcpgw: CapGateway, rec: Recorder) -> None:
    async with Client(stdio(mcpgw, rec, agent="rollout"), cache=None) as client:
        names = {t.name for t in (await client.list_tools()).tools}
    assert names == {"chat__send_message", "turret_explain"}


@pytest.mark.parametrize("mode", MODES)
async def test_stdio_turret_down_is_a_tool_error_and_the_session_survives(
    mcpgw: CapGateway, rec: Recorder, mode: str
) -> None:
    async with Client(stdio(mcpgw, rec), mode=mode, cache=None) as client:
        await client.list_tools()
        await mcpgw.client.server.close()
        down = await client.call_tool("qbit__list_torrents", {})
        assert down.is_error and text_of(down) == "Turret is not reachable"
        with pytest.raises(MCPError, match="Turret is not reachable"):
            await client.list_tools()
        again = await client.call_tool("qbit__list_torrents", {})
        assert again.is_error


async def test_stdio_reload_sends_list_changed_handshake(
    mcpgw: CapGateway, rec: Recorder, tmp_path: Any
) -> None:
    changed = anyio.Event()

    async def on_message(message: Any) -> None:
        if getattr(message, "method", None) == "notifications/tools/list_changed":
            changed.set()

    transport = stdio(mcpgw, rec)
    async with Client(transport, mode="legacy", cache=None, message_handler=on_message) as client:
        caps = client.server_capabilities.tools
        assert caps is not None and caps.list_changed
        assert "push__note" not in {t.name for t in (await client.list_tools()).tools}
        reload_with_grant(mcpgw, tmp_path)
        with anyio.fail_after(10):
            await changed.wait()
        assert rec.saw("notifications/tools/list_changed")
        assert "push__note" in {t.name for t in (await client.list_tools()).tools}


async def test_stdio_reload_sends_list_changed_on_listen_stream(
    mcpgw: CapGateway, rec: Recorder, tmp_path: Any
) -> None:
    async with Client(stdio(mcpgw, rec), mode="2026-07-28", cache=None) as client:
        async with client.listen(tools_list_changed=True) as sub:
            reload_with_grant(mcpgw, tmp_path)
            with anyio.fail_after(10):
                async for _event in sub:
                    break
        assert "push__note" in {t.name for t in (await client.list_tools()).tools}
