"""`turret mcp` over stdio: one agent, its own token, the SDK's stdio transport.

stdout is the protocol; logging goes to stderr. The token is checked with Turret before the
first message is read, so a missing or refused token ends the process before it serves.
"""

from __future__ import annotations

import logging

import anyio
from mcp.server.lowlevel.server import NotificationOptions
from mcp.server.stdio import stdio_server

from turret.mcp.bridge import Bridge, Changes, watch
from turret.mcp.client import TurretClient
from turret.mcp.tools import Features, listing_key

log = logging.getLogger("turret.mcp")


async def serve_stdio(client: TurretClient, features: Features, token: str, poll: float) -> None:
    """Serve until stdin closes. Raises what `Bridge.tools` raises if the start check fails."""
    changes = Changes() if poll > 0 else None
    bridge = Bridge(client, features, lambda _ctx: token, changes)
    tools = await bridge.tools(token)  # the token works, and the names map
    log.info("serving %d tools over stdio", len(tools))
    server = bridge.server()
    options = server.create_initialization_options(
        NotificationOptions(tools_changed=changes is not None)
    )
    async with stdio_server() as (read, write), anyio.create_task_group() as tasks:
        if changes is not None:
            tasks.start_soon(watch, bridge, token, poll, changes, listing_key(tools))
        await server.run(read, write, options)
        tasks.cancel_scope.cancel()
