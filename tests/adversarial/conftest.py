"""Fixtures for the adversarial suite: a hardened gateway, raw sockets, hostile upstreams.

The gateway here runs behind `TurretRunner` (the connection cap) with the limits the test asks
for; like every gateway, it is built by `tests.gateway.build_gateway` and leak-checked. Name
resolution goes through a real aiohttp resolver over a local hosts table (`HostsResolver`), so
DNS answers, including hostile ones, are under the test's control without touching real DNS.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

from tests.conftest import Gateway, Upstream, upstream_services
from tests.gateway import Canaries, build_gateway, fields_of
from turret.audit import Auditor
from turret.auth import token_sha256


class HostsResolver(AbstractResolver):
    """A resolver over a hosts table; a list of answers is served in turn (the last repeats)."""

    def __init__(self, table: dict[str, list[list[str]]]) -> None:
        self.table = table
        self.calls: list[str] = []

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        self.calls.append(host)
        answers = self.table.get(host)
        if not answers:
            raise OSError(f"{host}: no such host")
        answer = answers.pop(0) if len(answers) > 1 else answers[0]
        return [
            {
                "hostname": host,
                "host": ip,
                "port": port,
                "family": socket.AF_INET6 if ":" in ip else socket.AF_INET,
                "proto": 0,
                "flags": socket.AI_NUMERICHOST,
            }
            for ip in answer
        ]

    async def close(self) -> None:
        """Nothing to release."""


def hardened_config(
    upstream_url: str,
    tokens: tuple[str, str],
    *,
    services: str = "",
    grants: str = "",
    limits: str = "",
    agent_limits: str = "",
    other_grants: str = "",
) -> str:
    """Services on the fake upstream, two agents and a `token_credential` agent; `grants` are
    added to the first agent's grants, `other_grants` to the second's."""
    token, other = tokens
    return f"""
services:
{upstream_services(upstream_url)}{services}
agents:
  opencode:
    token_sha256: {token_sha256(token)}
    {agent_limits}
    proxy:
      - service: gitea
        methods: [GET, POST, PUT, DELETE]
        paths: ["/api/v1/repos/me/*", "/api/v1/user", "/api/v1/repos/me/*/issues/**",
                "/status/*", "/big/*", "/hang", "/reflect", "/echo/**", "/files/**"]
      - service: apikey
        methods: [GET]
        paths: ["/reflect", "/echo/**"]
      - service: q
        methods: [GET]
        paths: ["/reflect", "/echo/**"]
{grants}
  other:
    token_sha256: {token_sha256(other)}
    proxy:
      - service: gitea
        methods: [GET]
        paths: ["/api/v1/user", "/hang"]
{other_grants}
  bot:
    token_credential: bot-token
    proxy:
      - service: gitea
        methods: [GET]
        paths: ["/api/v1/user"]
{limits}
"""


@dataclass
class Hardened(Gateway):
    """A `Gateway` behind the connection cap, with the resolver it was built with."""

    resolver: HostsResolver
    max_connections: int

    @property
    def port(self) -> int:
        port = self.client.server.port
        assert port is not None
        return port

    async def raw(self, data: bytes, *, read_for: float = 5.0) -> tuple[bytes, bool]:
        """Send raw bytes; return what came back and whether the server closed the connection."""
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        try:
            writer.write(data)
            await writer.drain()
            return await read_until_closed(reader, read_for)
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


async def read_until_closed(reader: asyncio.StreamReader, within: float) -> tuple[bytes, bool]:
    """Everything `reader` yields until EOF (True) or until `within` seconds pass (False)."""
    received = b""
    try:
        async with asyncio.timeout(within):
            while chunk := await reader.read(65536):
                received += chunk
    except TimeoutError:
        return received, False
    except ConnectionResetError:
        return received, True
    return received, True


async def until(condition: Callable[[], bool], within: float = 5.0) -> None:
    """Wait until `condition()` holds, polling for at most `within` seconds."""
    for _ in range(int(within / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not reached in time")


MakeHardened = Callable[..., Awaitable[Hardened]]


@pytest.fixture
async def make_hardened(upstream: Upstream, leak_check: Canaries, tmp_path: Path) -> MakeHardened:
    """Build hardened gateways on demand; each is closed and leak-checked at the end."""
    built: list[Hardened] = []

    async def make(
        *,
        hosts: dict[str, list[list[str]]] | None = None,
        real_dns: bool = False,
        max_connections: int = 512,
        audit_path: Path | None = None,
        auditor: Auditor | None = None,
        **sections: str,
    ) -> Hardened:
        tokens = (leak_check.mint(), leak_check.mint())
        resolver = HostsResolver(hosts or {})
        base = await build_gateway(
            hardened_config(upstream.url, tokens, **sections),
            creds=leak_check,
            audit_path=audit_path or tmp_path / f"audit{len(built)}.jsonl",
            credentials_dir=leak_check.write(tmp_path / "credentials"),
            resolver=DefaultResolver if real_dns else lambda: resolver,
            max_connections=max_connections,
            auditor=auditor,
        )
        gw = Hardened(
            **fields_of(base),
            upstream=upstream,
            token=tokens[0],
            other_token=tokens[1],
            resolver=resolver,
            max_connections=max_connections,
        )
        built.append(gw)
        return gw

    return make


@pytest.fixture
async def hardened(make_hardened: MakeHardened) -> Hardened:
    """A hardened gateway with the default configuration."""
    return await make_hardened()


async def error_of(resp: Any) -> dict[str, str]:
    """The `error` object of a JSON error response."""
    body = await resp.json()
    assert body["ok"] is False
    error: dict[str, str] = body["error"]
    return error
