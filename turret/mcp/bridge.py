"""The MCP server: the SDK's low-level `Server` with handlers that ask Turret.

Tools are listed fresh from Turret whenever a client asks, so they are always the agent's own
and already narrowed. `Changes` carries `notifications/tools/list_changed` to both protocol
generations the SDK serves: `subscriptions/listen` streams (2026-07-28) through the SDK's bus,
and the standalone channel of a handshake-era session.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

import anyio
import mcp_types as types
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel.server import Server
from mcp.server.session import ServerSession
from mcp.server.subscriptions import InMemorySubscriptionBus, ListenHandler, ToolsListChanged
from mcp.shared.exceptions import MCPError
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

from turret import __version__
from turret.mcp.approvals import pending_approval, wait_for_approval
from turret.mcp.client import Answer, TurretClient, TurretUnreachable
from turret.mcp.names import NameClash, capability_name
from turret.mcp.tools import (
    EXPLAIN_TOOL,
    HTTP_TOOL,
    BadArguments,
    Features,
    build_tools,
    capability_result,
    error_result,
    explain_body,
    explain_result,
    http_result,
    listing_key,
    proxy_call,
    refusal_text,
    unreachable,
)

log = logging.getLogger("turret.mcp")
Context = ServerRequestContext[Any, Any]
TokenOf = Callable[[Context], str | None]
INSTRUCTIONS = (
    "These tools are actions Turret performs for you with credentials you never see. "
    "A refusal names Turret's reason; use turret_explain to ask before you try."
)


class TurretRefused(Exception):
    """Turret answered a listing with an error (a refused token, most often)."""

    def __init__(self, answer: Answer) -> None:
        super().__init__(refusal_text(answer))
        self.status = answer.status


class Changes:
    """Where `list_changed` goes when the watcher sees the listing change."""

    def __init__(self) -> None:
        self.bus = InMemorySubscriptionBus()
        self._legacy: ServerSession | None = None

    def remember(self, ctx: Context) -> None:
        """Note a handshake-era session: its standalone channel gets the next notification.
        (stdio has one connection, so the latest session is the one.)"""
        if ctx.protocol_version not in MODERN_PROTOCOL_VERSIONS:
            self._legacy = ctx.session

    async def announce(self) -> None:
        """Tell every listener the tool list changed."""
        await self.bus.publish(ToolsListChanged())
        if self._legacy is not None:
            try:
                await self._legacy.send_tool_list_changed()
            except (anyio.ClosedResourceError, anyio.BrokenResourceError):
                self._legacy = None  # the client has gone


class Bridge:
    """Handlers for `tools/list` and `tools/call`, each one request to Turret as the caller."""

    def __init__(
        self,
        client: TurretClient,
        features: Features,
        token_of: TokenOf,
        changes: Changes | None = None,
    ) -> None:
        self.client = client
        self.features = features
        self._token_of = token_of
        self._changes = changes

    def server(self) -> Server[Any]:
        """The SDK server; it serves `subscriptions/listen` when changes are watched."""
        listen = ListenHandler(self._changes.bus) if self._changes else None
        return Server(
            "turret",
            version=__version__,
            instructions=INSTRUCTIONS,
            on_list_tools=self._list_tools,
            on_call_tool=self._call_tool,
            on_subscriptions_listen=listen,
        )

    async def tools(self, token: str) -> list[types.Tool]:
        """The agent's tools now. Raises `TurretUnreachable`, `TurretRefused`, `NameClash`."""
        whoami = await self._get("/v1/whoami", token)
        listing = await self._get("/v1/capabilities", token)
        return build_tools(list(listing.get("capabilities") or []), whoami, self.features)

    async def _get(self, path: str, token: str) -> Mapping[str, Any]:
        answer = await self.client.request("GET", path, token)
        payload = answer.json()
        if answer.status != 200 or not isinstance(payload, dict) or payload.get("ok") is not True:
            raise TurretRefused(answer)
        return payload

    async def _list_tools(
        self, ctx: Context, params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        token = self._caller(ctx)
        try:
            tools = await self.tools(token)
        except (TurretUnreachable, TurretRefused, NameClash) as exc:
            raise MCPError(code=types.INTERNAL_ERROR, message=str(exc)) from None
        return types.ListToolsResult(tools=tools)

    async def _call_tool(
        self, ctx: Context, params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        token = self._caller(ctx)
        arguments = dict(params.arguments or {})
        try:
            return await self._dispatch(params.name, arguments, token, ctx)
        except BadArguments as exc:
            return error_result(str(exc), {"code": "bad_arguments"})
        except TurretUnreachable:
            return unreachable()

    async def _dispatch(
        self, name: str, arguments: dict[str, Any], token: str, ctx: Context
    ) -> types.CallToolResult:
        if name == HTTP_TOOL and self.features.http:
            call = proxy_call(arguments)
            answer = await self.client.request(
                call.method,
                f"/v1/proxy/{call.service}{call.path}",
                token,
                json_body=call.body,
                query=call.query,
                cap=self.features.http_max_body,
            )
            return http_result(answer)
        if name == EXPLAIN_TOOL and self.features.explain:
            body = explain_body(arguments, capability_name)
            answer = await self.client.request("POST", "/v1/explain", token, json_body=body)
            return explain_result(answer)
        capability = capability_name(name)
        if capability is None:
            return error_result("no such tool", {"code": "unknown_tool"})
        path = f"/v1/capabilities/{capability}"
        answer = await self.client.request("POST", path, token, json_body=arguments)
        approval_id = pending_approval(answer)
        if approval_id is not None:
            bound, progress = self.features.approval_wait, ctx.session.report_progress
            return await wait_for_approval(self.client, token, approval_id, bound, progress)
        return capability_result(answer)

    def _caller(self, ctx: Context) -> str:
        if self._changes is not None:
            self._changes.remember(ctx)
        token = self._token_of(ctx)
        if not token:  # the HTTP transport refuses such a request before it gets here
            raise MCPError(code=types.INVALID_REQUEST, message="no Turret token")
        return token


async def watch(bridge: Bridge, token: str, interval: float, changes: Changes, key: str) -> None:
    """Poll the agent's listing every `interval` seconds; announce when it differs from `key`."""
    while True:
        await anyio.sleep(interval)
        try:
            tools = await bridge.tools(token)
        except (TurretUnreachable, TurretRefused, NameClash) as exc:
            log.warning("cannot refresh the tool list: %s", exc)
            continue
        new = listing_key(tools)
        if new != key:
            key = new
            log.info("the tool list changed (%d tools)", len(tools))
            await changes.announce()
