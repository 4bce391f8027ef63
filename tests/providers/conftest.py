"""Fixtures of the provider tests: a Turret in front of the fake GitHub; for the cloud
providers one moto server for the session, a fake Vault per test, clocks both share with
Turret, and a client session for the wire-level tests."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from tests.gateway import Canaries
from tests.providers.fakevault import FakeVault
from tests.providers.github import GitHubGateway, github_gateway
from tests.providers.minters import FakeTime
from tests.providers.motoserver import MotoServer, binary


@pytest.fixture
async def gh(
    leak_check: Canaries, tmp_path: Path, creds_dir: Path
) -> AsyncIterator[GitHubGateway]:
    """Turret minting from the fake GitHub, with controlled time; checked for leaks."""
    async for gateway in github_gateway(leak_check, tmp_path, creds_dir):
        yield gateway


@pytest.fixture(scope="session")
def moto() -> Iterator[MotoServer]:
    """moto in server mode, bootstrapped, with IAM authentication on. CI must have it."""
    if not binary() and not os.environ.get("CI"):
        pytest.skip("moto_server is not installed (the test extra has moto[server])")
    server = MotoServer.start()
    try:
        server.bootstrap()
        yield server
    finally:
        server.stop()


@pytest.fixture
def clock() -> FakeTime:
    """The test's clocks, shared by the fake Vault and Turret's providers."""
    return FakeTime()


@pytest.fixture
async def vault(clock: FakeTime, leak_check: Canaries) -> AsyncIterator[tuple[FakeVault, str]]:
    """A fake Vault on loopback and its URL; every value it hands out is a leak-check canary."""
    fake = FakeVault(lambda: clock.wall)
    leak_check.watch(fake.issued)
    leak_check.watch([fake.secret_id])
    server = TestServer(fake.app(), host="127.0.0.1")
    await server.start_server()
    try:
        yield fake, str(server.make_url("")).rstrip("/")
    finally:
        await server.close()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """A plain client session for calls made straight to a source."""
    async with aiohttp.ClientSession() as session:
        yield session
