"""The bridge's HTTP client to Turret's agent API, over the agents' unix socket or TCP.

Every request carries the token it is given (stdio: the agent's own; HTTP: the caller's); the
client stores none. Failures to reach Turret become `TurretUnreachable`, whose message names
neither the token nor anything Turret would have said.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import aiohttp
from yarl import URL

log = logging.getLogger("turret.mcp")

DEFAULT_SOCKET = "/run/turret/agents.sock"
MAX_ANSWER_BYTES = 4 * 1024 * 1024  # Turret bounds its own answers; this bounds a bad peer


class StartError(Exception):
    """Why `turret mcp` will not serve; the message is shown as is."""


class TurretUnreachable(Exception):
    """Turret did not answer (down, socket missing, timed out, connection cut)."""

    def __init__(self) -> None:
        super().__init__("Turret is not reachable")


@dataclass(frozen=True)
class Target:
    """Where Turret listens: a unix socket path, or a base URL (`http://127.0.0.1:8421`)."""

    socket: str | None = DEFAULT_SOCKET
    url: str | None = None

    def base(self) -> URL:
        """The base URL requests are made against."""
        return URL(self.url) if self.url else URL("http://turret")  # host unused on a socket


@dataclass(frozen=True)
class Answer:
    """Turret's answer: status, content type, and the body up to the cap asked for."""

    status: int
    content_type: str
    body: bytes
    truncated: bool  # the body went on past the cap

    def json(self) -> Any:
        """The body as JSON, or None if it is not JSON."""
        try:
            return json.loads(self.body)
        except ValueError:
            return None


class TurretClient:
    """One aiohttp session to Turret, reused by every call of the bridge."""

    def __init__(self, target: Target, *, timeout: float = 60.0) -> None:
        self._base = target.base()
        connector = None if target.url else aiohttp.UnixConnector(path=target.socket or "")
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=timeout),
            auto_decompress=False,  # sizes are Turret's bytes; Turret does not compress
        )

    async def __aenter__(self) -> TurretClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the session and its connections."""
        await self._session.close()

    async def request(
        self,
        method: str,
        path: str,
        token: str,
        *,
        json_body: Any = None,
        query: dict[str, str] | None = None,
        cap: int = MAX_ANSWER_BYTES,
    ) -> Answer:
        """Send one request to Turret as the agent holding `token`; keep `cap` bytes of body."""
        url = self._base.join(URL.build(path=path, query=query or None))
        headers = {"Authorization": f"Bearer {token}"}
        try:
            async with self._session.request(
                method, url, headers=headers, json=json_body, allow_redirects=False
            ) as resp:
                body, truncated = await _read_capped(resp, cap)
                return Answer(resp.status, resp.content_type, body, truncated)
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            # The exception names the socket or host, never a header; the class says enough.
            log.warning("Turret is not reachable: %s", type(exc).__name__)
            raise TurretUnreachable() from None


async def _read_capped(resp: aiohttp.ClientResponse, cap: int) -> tuple[bytes, bool]:
    """Read the body up to `cap` bytes; the rest is not read (the connection is dropped)."""
    kept = bytearray()
    async for chunk in resp.content.iter_chunked(65536):
        kept += chunk
        if len(kept) > cap:
            return bytes(kept[:cap]), True
    return bytes(kept), False
