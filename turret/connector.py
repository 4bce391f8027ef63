"""Upstream client sessions that connect only to addresses the service's policy allows.

The check happens inside aiohttp's resolver step: `PolicyResolver` resolves the configured host,
checks every address, and hands the connector only the addresses it checked, so the address
connected to is exactly one that was checked (no second lookup for a DNS rebinding attacker to
answer differently). TLS SNI, certificate checks and the Host header still use the configured
name. DNS answers are not cached, so every new connection resolves and checks again; a pooled
keep-alive connection stays on the address it was checked for.

Services with different address policies never share a connection pool: a connection opened for
a service that may reach `192.168.1.10` must not be reused for one that may not.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

from turret.netpolicy import AddressPolicy

ResolverFactory = Callable[[], AbstractResolver]


class AddressRefused(OSError):
    """Every address the host resolved to is outside the service's address policy."""

    def __init__(self, reasons: list[str]) -> None:
        super().__init__("; ".join(reasons) or "no address")
        self.reasons = reasons


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
        connector=aiohttp.TCPConnector(
            limit=256, resolver=resolver, use_dns_cache=False, enable_cleanup_closed=True
        ),
        auto_decompress=True,
    )
