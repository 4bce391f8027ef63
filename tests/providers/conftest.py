"""Fixtures for the cloud providers: one moto server for the session, a fake Vault per test,
a clock both share with Turret, and a client session for the wire-level tests."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from tests.gateway import Canaries
from tests.providers.fakevault import FakeVault
from tests.providers.motoserver import MotoServer, binary


@dataclass
class Clock:
    """Wall-clock seconds, moved by the test."""

    now: float = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


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
def clock() -> Clock:
    """The test's wall clock."""
    return Clock()


@pytest.fixture
async def vault(clock: Clock, leak_check: Canaries) -> AsyncIterator[tuple[FakeVault, str]]:
    """A fake Vault on loopback and its URL; every value it hands out is a leak-check canary."""
    fake = FakeVault(clock)
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
