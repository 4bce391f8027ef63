"""`turret mcp --listen`: the same tools over the SDK's Streamable HTTP transport, under uvicorn.

One bridge serves many agents and holds no token: each HTTP request authenticates with
`Authorization: Bearer <Turret token>`, checked against Turret's `/v1/whoami` by the SDK's
bearer middleware (no bearer, or one Turret refuses: 401), and each tool call is forwarded to
Turret with that same token. A session is bound to the agent that opened it (the SDK compares
the principal), so another agent cannot ride it. Loopback only unless `--allow-remote`.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from dataclasses import dataclass
from typing import Any

import uvicorn
from mcp.server.auth.middleware.auth_context import AuthContextMiddleware
from mcp.server.auth.middleware.bearer_auth import BearerAuthBackend, RequireAuthMiddleware
from mcp.server.auth.provider import AccessToken
from mcp.server.streamable_http_manager import StreamableHTTPASGIApp, StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.routing import Route

from turret.listeners import remove_stale_socket
from turret.mcp.bridge import Bridge, Context
from turret.mcp.client import TurretClient, TurretUnreachable
from turret.mcp.tools import Features

log = logging.getLogger("turret.mcp")
PATH = "/mcp"


@dataclass(frozen=True)
class Listen:
    """Where to listen: `host` and `port`, or a unix socket `path`."""

    host: str = "127.0.0.1"
    port: int = 0
    path: str | None = None

    @classmethod
    def parse(cls, text: str, *, allow_remote: bool) -> Listen:
        """`HOST:PORT`, `[V6]:PORT` or `unix:PATH`; a non-loopback host needs `allow_remote`."""
        if text.startswith("unix:"):
            return cls(path=text.removeprefix("unix:"))
        host, sep, port = text.rpartition(":")
        host = host.removeprefix("[").removesuffix("]")
        if not sep or not host or not port.isdigit() or int(port) > 65535:
            raise ValueError(f"--listen {text!r}: expected HOST:PORT or unix:PATH")
        if not allow_remote and not _loopback(host):
            raise ValueError(
                f"--listen {text!r} is not a loopback address; refusing without --allow-remote "
                "(tokens would cross the network in clear text unless a TLS proxy fronts it)"
            )
        return cls(host=host, port=int(port))

    @property
    def loopback(self) -> bool:
        """Whether only this host can connect (a unix socket counts)."""
        return self.path is not None or _loopback(self.host)


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name could resolve anywhere


class TurretVerifier:
    """The SDK's `TokenVerifier`: a token is good if Turret's `/v1/whoami` accepts it."""

    def __init__(self, client: TurretClient) -> None:
        self._client = client

    async def verify_token(self, token: str) -> AccessToken | None:
        """The agent as the principal (sessions are bound to it), or None: 401."""
        try:
            answer = await self._client.request("GET", "/v1/whoami", token)
        except TurretUnreachable:
            return None
        payload = answer.json()
        if answer.status != 200 or not isinstance(payload, dict) or payload.get("ok") is not True:
            return None
        return AccessToken(token=token, client_id=str(payload.get("agent")), scopes=[])


def bearer_of(ctx: Context) -> str | None:
    """The token of the HTTP request that carried this message."""
    request: Any = ctx.request
    if request is None:
        return None
    scheme, _, token = str(request.headers.get("authorization", "")).partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def create_app(client: TurretClient, features: Features, listen: Listen) -> Starlette:
    """The ASGI app: the SDK's session manager behind the SDK's bearer middleware."""
    server = Bridge(client, features, bearer_of).server()
    security = (
        TransportSecuritySettings(
            allowed_hosts=["127.0.0.1:*", "localhost:*", "[::1]:*", "localhost", "127.0.0.1"],
            allowed_origins=["http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*"],
        )
        if listen.loopback
        # Remote: a browser page cannot add the bearer, so DNS rebinding gains it nothing.
        else TransportSecuritySettings(enable_dns_rebinding_protection=False)
    )
    manager = StreamableHTTPSessionManager(app=server, security_settings=security)
    endpoint = RequireAuthMiddleware(StreamableHTTPASGIApp(manager), required_scopes=[])
    return Starlette(
        routes=[Route(PATH, endpoint=endpoint)],
        middleware=[
            Middleware(AuthenticationMiddleware, backend=BearerAuthBackend(TurretVerifier(client))),
            Middleware(AuthContextMiddleware),
        ],
        lifespan=lambda _app: manager.run(),
    )


def bind(listen: Listen) -> socket.socket:
    """The listening socket (bound here so port 0 works and the address can be logged)."""
    if listen.path is not None:
        remove_stale_socket(listen.path)  # a socket left behind, never any other file
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(listen.path)
        sock.listen(128)
        return sock
    return socket.create_server((listen.host, listen.port), backlog=128)


async def serve_http(client: TurretClient, features: Features, listen: Listen) -> None:
    """Serve until SIGTERM/SIGINT (uvicorn's own handling)."""
    sock = bind(listen)
    name = sock.getsockname()
    where = f"unix:{name}" if listen.path else f"http://{listen.host}:{name[1]}{PATH}"
    log.info("serving Streamable HTTP on %s", where)
    config = uvicorn.Config(
        create_app(client, features, listen), log_config=None, access_log=False, lifespan="on"
    )
    await uvicorn.Server(config).serve(sockets=[sock])
