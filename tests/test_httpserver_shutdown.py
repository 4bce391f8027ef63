"""Shutting a `TurretServer` down closes every connection it ever made, including one made as it
shuts down (an accept queued before the listening socket closed, whose handler is made after
the open connections were closed) and one aiohttp no longer tracks. Otherwise such a connection
stays open, unread, until the garbage collector finds it (a ResourceWarning, and a socket the
process holds for nothing)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from turret.httpserver import TurretRunner, TurretServer


async def _hello(request: web.Request) -> web.Response:
    return web.Response(text="hello")


@pytest.fixture
async def runner() -> AsyncIterator[TurretRunner]:
    app = web.Application()
    app.router.add_get("/", _hello)
    r = TurretRunner(app, max_connections=8, handle_signals=False, access_log=None)
    await r.setup()
    yield r
    await r.cleanup()


def _server(runner: TurretRunner) -> TurretServer:
    assert isinstance(runner.server, TurretServer)
    return runner.server


async def _accept(server: TurretServer) -> tuple[socket.socket, asyncio.BaseTransport]:
    """A connection handed to `server` as the event loop hands it an accepted socket: the
    client's end, and the server's transport once its handler has it."""
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    loop = asyncio.get_running_loop()
    transport, _ = await loop.connect_accepted_socket(server, theirs)
    return ours, transport


async def _closed_by_server(client: socket.socket) -> bool:
    """Whether the server closed its end: the client reads EOF (within the test's timeout)."""
    loop = asyncio.get_running_loop()
    return await loop.sock_recv(client, 1) == b""


async def test_a_connection_made_during_shutdown_is_closed_at_once(runner: TurretRunner) -> None:
    server = _server(runner)
    await server.shutdown(1)
    client, transport = await _accept(server)
    with client:
        assert await _closed_by_server(client)
        assert transport.is_closing()
    assert not server.live


async def test_a_connection_aiohttp_forgot_is_closed_by_shutdown(runner: TurretRunner) -> None:
    server = _server(runner)
    client, transport = await _accept(server)
    with client:
        loop = asyncio.get_running_loop()
        await loop.sock_sendall(client, b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        assert b"hello" in await loop.sock_recv(client, 4096)
        assert server.live == {transport}
        server._connections.clear()  # as if aiohttp had lost track of it
        await server.shutdown(1)
        assert await _closed_by_server(client)
    assert transport.is_closing()


async def test_a_connection_lost_is_forgotten(runner: TurretRunner) -> None:
    server = _server(runner)
    client, transport = await _accept(server)
    client.close()
    while server.live:  # noqa: ASYNC110 - connection_lost is the event; nothing to wait on
        await asyncio.sleep(0)
    assert transport.is_closing()
