"""Fixtures for the adversarial suite: a hardened gateway, raw sockets, hostile upstreams.

The gateway here runs behind `TurretRunner` (the connection cap) with the limits the test asks
for, and its leak check also covers the agents' own tokens. Name resolution goes through a real
aiohttp resolver over a local hosts table (`HostsResolver`), so DNS answers, including hostile
ones, are under the test's control without touching real DNS.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver
from aiohttp.test_utils import TestClient, TestServer
from aiohttp.web_runner import AppRunner

from tests.conftest import Gateway, Upstream, record_responses, upstream_services
from turret.audit import Auditor, LineSink
from turret.auth import new_token, token_sha256
from turret.config import load_config
from turret.echo import encodings
from turret.httpserver import TurretRunner
from turret.runtime import RuntimeHolder, build_runtime
from turret.web.app import create_app


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


class TurretTestServer(TestServer):
    """A test server run by Turret's own runner, so the connection cap is in force."""

    def __init__(self, app: web.Application, *, max_connections: int) -> None:
        super().__init__(app, host="127.0.0.1")
        self._max_connections = max_connections

    async def _make_runner(self, **kwargs: Any) -> AppRunner:
        # As in production (turret.server): no access log, which would record raw targets.
        kwargs["access_log"] = None
        return TurretRunner(self.app, max_connections=self._max_connections, **kwargs)


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
    """A `Gateway` with the agents' tokens and the resolver it was built with."""

    resolver: HostsResolver = field(default_factory=lambda: HostsResolver({}))
    max_connections: int = 512

    @property
    def port(self) -> int:
        port = self.client.server.port
        assert port is not None
        return port

    def forbidden_forms(self) -> set[bytes]:
        forms = super().forbidden_forms()
        for token in (self.token, self.other_token):
            forms |= encodings(token.encode())
        return forms

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
async def make_hardened(
    upstream: Upstream,
    creds_dir: Path,
    canaries: dict[str, str],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> AsyncIterator[MakeHardened]:
    """Build hardened gateways on demand; each is closed and leak-checked at the end."""
    caplog.set_level(logging.DEBUG)
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
        tokens = (new_token(), new_token())
        config = load_config(hardened_config(upstream.url, tokens, **sections))
        runtime = build_runtime(config, str(creds_dir))
        resolver = HostsResolver(hosts or {})
        path = audit_path or tmp_path / f"audit{len(built)}.jsonl"
        app = create_app(
            RuntimeHolder(runtime),
            auditor or Auditor(LineSink.open(str(path))),
            resolver=DefaultResolver if real_dns else lambda: resolver,
        )
        recorded = record_responses(app)
        client = TestClient(TurretTestServer(app, max_connections=max_connections))
        await client.start_server()
        gw = Hardened(
            client, upstream, *tokens, path, canaries, recorded, resolver, max_connections
        )
        built.append(gw)
        return gw

    yield make
    for gw in built:
        await gw.client.close()
        gw.assert_no_leaks(caplog.text)


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
