"""The hardened HTTP server: parser limits, timeouts, a connection cap, safe parser-error logs.

aiohttp's C parser (llhttp) already refuses ambiguous framing (Content-Length with
Transfer-Encoding, duplicate or malformed Content-Length, unknown or repeated transfer codings,
bad chunk sizes, bare LF, obs-fold, NUL/CR in values), answers 400 and closes the connection; the
adversarial suite pins that behaviour. This module sets the limits around it:

- request line, header field and header count limits (`limits.max_url_bytes`, ...);
- `limits.header_timeout`: a connection must deliver a complete request head within it, from
  when it opens and after each response (aiohttp's keep-alive timer closes a connection whose
  handler is still waiting for a message, which is exactly a slow head);
- `limits.max_connections`: connections beyond it are answered 503 and closed at once.

Parser errors quote the offending bytes, which may hold an agent's token: they are logged here
by exception type only, and answered in Turret's JSON error shape without the quote. No answer
names aiohttp's or Python's version (`Server: turret`).

aiohttp has no argument for the class of its per-connection handler, so `TurretServer` is a
`web.Server` that builds Turret's, and `TurretRunner` makes one (its `_make_server` is the hook
aiohttp's runners themselves override).
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from aiohttp import hdrs, web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestHandler

from turret.errors import error_body
from turret.principal import Peer
from turret.ratelimit import ServerLimits

HTTP_LOG = logging.getLogger("turret.http")
SERVER_HEADER = "turret"  # in place of aiohttp's `Python/3.x aiohttp/3.y`: no versions announced
_LINGER_SECONDS = 2.0  # how long an unread request body is drained after an early answer


class _ParserErrorFilter(logging.Filter):
    """Log a refused malformed request by its exception type, never by the bytes it quotes."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            record.msg = "refused malformed HTTP request (%s)"
            record.args = (type(exc).__name__,)
            record.exc_info = record.exc_text = None
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


HTTP_LOG.addFilter(_ParserErrorFilter())


def handler_args(limits: ServerLimits) -> dict[str, Any]:
    """Keyword arguments for aiohttp's per-connection protocol (`Application(handler_args=)`)."""
    return {
        "max_line_size": limits.max_url_bytes,
        "max_field_size": limits.max_header_bytes,
        "max_headers": limits.max_headers,
        "keepalive_timeout": limits.header_timeout,
        "lingering_time": min(_LINGER_SECONDS, limits.body_timeout),
        "logger": HTTP_LOG,
    }


_BUSY_BODY = json.dumps(error_body("unavailable", "too many connections", "")).encode()
_BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
    b"Retry-After: 1\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s"
    % (len(_BUSY_BODY), _BUSY_BODY)
)


class _JsonErrorHandler(RequestHandler):
    """aiohttp's connection handler, whose own refusals (malformed HTTP, caught before any route
    runs) are answered in the JSON error shape and never quote back the bytes refused."""

    __slots__ = ("_made",)

    def __init__(self, manager: web.Server, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._made: asyncio.BaseTransport | None = None

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        # aiohttp's own handling logs (through the filter above) and refuses to answer twice.
        super().handle_error(request, status, exc, message)
        code = {400: "bad_request", 413: "request_too_large", 500: "internal"}.get(status)
        body = error_body(code or "http_error", HTTPStatus(status).phrase.lower(), "")
        response = web.json_response(body, status=status, headers={hdrs.SERVER: SERVER_HEADER})
        response.force_close()
        return response

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Every connection is held by the server until it is lost, so that shutting down closes
        # it even where aiohttp no longer tracks it; one accepted as the server shuts down (the
        # accept was queued before the listening socket closed, its handler made after the
        # open connections were closed) is closed at once.
        self._made = transport
        manager = self._manager
        if isinstance(manager, TurretServer):
            manager.live.add(transport)
            if manager.closing:
                transport.close()
                return
        super().connection_made(transport)

    def connection_lost(self, exc: BaseException | None) -> None:
        manager = self._manager  # aiohttp's connection_lost forgets it
        super().connection_lost(exc)
        if isinstance(manager, TurretServer) and self._made is not None:
            manager.live.discard(self._made)


class _Busy(_JsonErrorHandler):
    """Answers 503 and closes: the handler of a connection over the cap. It never registers
    with the server (nothing to shut down) and never reads the request."""

    __slots__ = ()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)  # noqa: S101 - stream sockets only
        transport.write(_BUSY)
        transport.close()


@dataclass(frozen=True)
class PeerCredentials:
    """Who is at the other end of a unix socket, as the kernel says (`SO_PEERCRED`)."""

    pid: int
    uid: int
    gid: int


# An app whose connections must come from certain peers sets this: called with the peer's
# credentials (None when the kernel gives none, e.g. over TCP) as each connection opens; False
# closes the connection before a byte is read.
PeerCheck = Callable[[PeerCredentials | None], bool]
PEER_CHECK: web.AppKey[PeerCheck] = web.AppKey("peer_check")
_UCRED = struct.Struct("3i")


def peer_credentials(transport: asyncio.BaseTransport | None) -> PeerCredentials | None:
    """The `SO_PEERCRED` of a unix-socket transport, or None (not a unix socket, or closed)."""
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is None or sock.family != socket.AF_UNIX:
        return None
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    except OSError:
        return None
    return PeerCredentials(*_UCRED.unpack(raw))


class _PeerChecked(_JsonErrorHandler):
    """A connection handler that asks the app's `PEER_CHECK` first and closes the connection
    unanswered when it says no."""

    __slots__ = ("_peer_check",)

    def __init__(self, manager: web.Server, peer_check: PeerCheck, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._peer_check = peer_check

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if not self._peer_check(peer_credentials(transport)):
            transport.close()
            return
        super().connection_made(transport)


# An app whose requests need to know their caller sets this: called once with each connection's
# socket as it opens (turret.peerid.identify); `connection_peer` gives a request its result.
PeerIdentity = Callable[[Any], Peer | None]
PEER_IDENTITY: web.AppKey[PeerIdentity] = web.AppKey("peer_identity")


class _Identified(_JsonErrorHandler):
    """A connection handler that learns who its peer is once, as the connection opens."""

    __slots__ = ("_identify", "peer")

    def __init__(self, manager: web.Server, identify: PeerIdentity, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._identify = identify
        self.peer: Peer | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        sock = transport.get_extra_info("socket")
        self.peer = self._identify(sock) if sock is not None else None
        super().connection_made(transport)


def connection_peer(request: web.BaseRequest) -> Peer | None:
    """The peer of the connection `request` came on (None unless its app asks for
    `PEER_IDENTITY`, or when the kernel gave none, e.g. over TCP)."""
    handler = request.protocol
    return handler.peer if isinstance(handler, _Identified) else None


class TurretServer(web.Server):
    """aiohttp's low-level server for the app, with Turret's connection handler and at most
    `max_connections` connections at once (beyond, 503 and close)."""

    def __init__(
        self, app_server: web.Server, max_connections: int, peer_check: PeerCheck | None = None
    ) -> None:
        # The same request handler, request factory and handler arguments as the server aiohttp
        # made for the app; `_kwargs` is where `web.Server` keeps the handler arguments.
        super().__init__(
            app_server.request_handler,
            request_factory=app_server.request_factory,
            handler_cancellation=app_server.handler_cancellation,
            **app_server._kwargs,
        )
        self._max_connections = max_connections
        self.peer_check = peer_check
        self.identify: PeerIdentity | None = None
        self.closing = False  # set by `shutdown`: a connection made after it is closed at once
        self.live: set[asyncio.BaseTransport] = set()  # every connection not yet lost

    async def shutdown(self, timeout: float | None = None) -> None:  # noqa: ASYNC109 - aiohttp's
        """Close every connection (after in-flight requests, within `timeout`), and any that
        is made while this runs or that aiohttp no longer tracks."""
        self.closing = True
        await super().shutdown(timeout)
        for transport in list(self.live):
            if not transport.is_closing():
                transport.close()

    def __call__(self) -> RequestHandler:
        if len(self.connections) >= self._max_connections:
            HTTP_LOG.warning("connection refused: %d connections open", self._max_connections)
            return _Busy(self, loop=self._loop, **self._kwargs)
        if self.peer_check is not None:
            return _PeerChecked(self, self.peer_check, loop=self._loop, **self._kwargs)
        if self.identify is not None:
            return _Identified(self, self.identify, loop=self._loop, **self._kwargs)
        return _JsonErrorHandler(self, loop=self._loop, **self._kwargs)


class TurretRunner(web.AppRunner):
    """An `AppRunner` serving through a `TurretServer`."""

    def __init__(self, app: web.Application, *, max_connections: int, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self._max_connections = max_connections

    async def _make_server(self) -> web.Server:
        peer_check = self._app.get(PEER_CHECK)
        server = TurretServer(await super()._make_server(), self._max_connections, peer_check)
        server.identify = self._app.get(PEER_IDENTITY)
        return server
