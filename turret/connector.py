"""Upstream client sessions that connect only to addresses the service's policy allows.

The check happens inside aiohttp's resolver step: `PolicyResolver` resolves the configured host,
checks every address, and hands the connector only the addresses it checked, so the address
connected to is exactly one that was checked (no second lookup for a DNS rebinding attacker to
answer differently). TLS SNI, certificate checks and the Host header still use the configured
name. DNS answers are not cached, so every new connection resolves and checks again; a pooled
keep-alive connection stays on the address it was checked for.

Services with different address policies never share a connection pool: a connection opened for
a service that may reach `192.168.1.10` must not be reused for one that may not.

A pooled connection carries one agent's request after another's, so a response whose framing is
in any doubt must never leave bytes behind for the next one: `GuardedHandler` (the protocol every
pooled connection uses) refuses any message `framing_fault` names and discards a connection on
which anything arrives after the end of the final response (see its docstring).
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import re
import socket
from collections.abc import Callable
from typing import Any, cast

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.client_proto import ResponseHandler
from aiohttp.compression_utils import HAS_BROTLI, HAS_ZSTD
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.http_parser import RawResponseMessage
from aiohttp.streams import StreamReader
from multidict import CIMultiDictProxy

from turret.errors import AddressRefused
from turret.netpolicy import AddressPolicy

ResolverFactory = Callable[[], AbstractResolver]



class PolicyResolver(AbstractResolver):
    """Resolves with `inner` and returns only the results `policy` allows."""

    def __init__(self, inner: AbstractResolver, policy: AddressPolicy) -> None:
        self._inner = inner
        self._policy = policy

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        """The allowed addresses of `host`; `AddressRefused` if there are none."""
        results = await self._inner.resolve(host, port, family)
        allowed: list[ResolveResult] = []
        refused: list[str] = []
        for result in results:
            try:
                addr = ipaddress.ip_address(result["host"])
            except ValueError:
                refused.append("resolver returned something that is not an IP address")
                continue
            why = self._policy.refusal(addr)
            if why is None:
                allowed.append(result)
            else:
                refused.append(why)
        if not allowed:
            raise AddressRefused(refused)
        return allowed

    async def close(self) -> None:
        """The inner resolver is shared and closed by its owner."""


class SessionPool:
    """One client session per address policy, created on first use, closed together."""

    def __init__(self, resolver: AbstractResolver) -> None:
        self._resolver = resolver
        self._sessions: dict[AddressPolicy, aiohttp.ClientSession] = {}

    def session_for(self, policy: AddressPolicy) -> aiohttp.ClientSession:
        """The session whose connections may only reach what `policy` allows."""
        session = self._sessions.get(policy)
        if session is None:
            session = self._sessions[policy] = new_session(PolicyResolver(self._resolver, policy))
        return session

    async def close(self) -> None:
        """Close every session, then the shared resolver."""
        for session in self._sessions.values():
            await session.close()
        self._sessions.clear()
        await self._resolver.close()


def new_session(resolver: AbstractResolver) -> aiohttp.ClientSession:
    """A pooled client: no proxy settings from the environment, no cookie jar shared by agents."""
    return aiohttp.ClientSession(
        trust_env=False,
        cookie_jar=aiohttp.DummyCookieJar(),
        connector=GuardedConnector(
            limit=256, resolver=resolver, use_dns_cache=False, enable_cleanup_closed=True
        ),
        auto_decompress=True,
    )


# The content codings the installed aiohttp decodes (br and zstd only with their optional
# libraries): the only ones Turret asks for, and the only ones it accepts.
DECODABLE = frozenset({"gzip", "deflate"} | ({"br"} if HAS_BROTLI else set()))
DECODABLE |= {"zstd"} if HAS_ZSTD else set()
ACCEPT_ENCODING = ", ".join(sorted(DECODABLE))
# Interim answers aiohttp reads past: 100 Continue and 103 Early Hints. Turret never asks to
# upgrade (Upgrade is hop-by-hop and dropped), so a 101 is as unexpected as a 102 or a 199.
_INTERIM = frozenset({100, 103})
# Control characters aiohttp's server refuses to write in a header (it would drop the answer).
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def framing_fault(
    code: int, headers: CIMultiDictProxy[str], compression: str | None, chunked: bool
) -> str | None:
    """Why Turret refuses a parsed response head (a fixed text, never upstream bytes), or None.

    `compression` is the coding aiohttp will decode, `chunked` whether it de-chunks: any coding
    it would pass through undecoded (stacked, aliased, unknown, empty) is refused, because the
    echo guard could not read the body and the agent's client might.
    """
    if not (200 <= code <= 599 or code in _INTERIM):
        return "unexpected status code"
    if _CONTROL.search("\t".join(f"{k}\t{v}" for k, v in headers.items())):
        return "control character in a header"
    codings = _tokens(headers, "Content-Encoding")
    if codings not in ([], ["identity"]) and (
        codings != [compression] or compression not in DECODABLE
    ):
        return "content coding Turret cannot decode"
    transfer = _tokens(headers, "Transfer-Encoding")
    if transfer and (transfer != ["chunked"] or not chunked):
        return "transfer coding other than chunked"
    return None


def _tokens(headers: CIMultiDictProxy[str], name: str) -> list[str]:
    """Every comma-separated token of every `name` field, trimmed and lowercased."""
    return [t.strip().lower() for v in headers.getall(name, ()) for t in v.split(",")]


class FramingRefused(HttpProcessingError):
    """A response head `framing_fault` refused; its message is the fixed reason."""


class GuardedHandler(ResponseHandler):
    """aiohttp's client protocol, made to never hand one answer's leftovers to the next request.

    aiohttp pools a connection once the response body reached its end, checking only that no
    parsed message is queued (`should_close`); bytes that arrive later, while the connection
    sits idle in the pool, are parsed into the queue and read as the answer to whatever request
    reuses it. Here, once the final response's body has ended, anything the parser still holds
    (a fragment of a next head that came with the body) and any byte or message that arrives
    later marks the connection dirty and closes it, so the pool drops it instead of reusing it.

    aiohttp has no supported hook for this: the subclass overrides `ResponseHandler` methods, and
    `GuardedConnector` installs it through the connector's `_factory`. tests/adversarial/
    test_desync.py pins the behaviour, so an aiohttp that changes these internals fails there.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(loop)
        self._idle = False  # the final response's body ended; nothing more may arrive
        self._dirty = False
        self._receiving = False  # inside aiohttp's parser: it must not be re-entered

    @property
    def should_close(self) -> bool:
        """aiohttp's reasons to close, or bytes that arrived after the final response."""
        return self._dirty or super().should_close

    def set_response_params(self, **kwargs: Any) -> None:
        """A new request is on its way: its answer may arrive."""
        self._idle = False
        super().set_response_params(**kwargs)

    def data_received(self, data: bytes) -> None:
        """Parse as aiohttp does, unless the final response already ended."""
        if self._idle and data:
            self._discard()
            return
        self._receiving = True
        try:
            super().data_received(data)
        finally:
            self._receiving = False
        if self._idle:
            self._check_leftovers()

    def feed_data(self, data: tuple[RawResponseMessage, StreamReader], size: int = 0) -> None:
        """Queue a parsed message, unless it came after the final response (smuggled)."""
        if self._idle:
            self._discard()
            return
        super().feed_data(data, size)

    async def read(self) -> tuple[RawResponseMessage, StreamReader]:
        """The next response head, or `FramingRefused` (the connection is then not reused)."""
        message, payload = await super().read()
        fault = framing_fault(message.code, message.headers, message.compression, message.chunked)
        if fault is not None:
            self._dirty = True
            raise FramingRefused(code=502, message=fault)
        if message.code >= 200:
            payload.on_eof(self._final_response_ended)
        return message, payload

    def _final_response_ended(self) -> None:
        self._idle = True
        if not self._receiving:
            self._check_leftovers()

    def _check_leftovers(self) -> None:
        """Discard the connection if the parser holds bytes past the final response: at the end
        of input, aiohttp's parser turns a started head into a message (or an error)."""
        if self._parser is None or self._dirty:
            return
        try:
            leftover = self._parser.feed_eof() is not None
        except Exception:  # a fragment that cannot even be a head is a leftover too
            leftover = True
        if leftover:
            self._discard()

    def _discard(self) -> None:
        self._dirty = True
        if self.transport is not None:
            self.transport.abort()


class GuardedConnector(aiohttp.TCPConnector):
    """A `TCPConnector` whose connections use `GuardedHandler`."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        # aiohttp's protocol factory (private, no public setter): see `GuardedHandler`.
        self._factory = cast(
            "functools.partial[ResponseHandler]", functools.partial(GuardedHandler, loop=self._loop)
        )
