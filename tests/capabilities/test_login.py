"""The WebUI login's backoff: a failed login is not retried on every call, wrong credentials
are tried only a few times, and qBittorrent never gets a reason to ban the host's loopback.

Against the fake qBittorrent (a real aiohttp server that counts logins and bans an address after
5 failures in a row, as qBittorrent does) with an injected clock: no sleeps.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from tests.capabilities.conftest import CapGateway
from tests.capabilities.fake_services import FakeState, qbittorrent_app
from turret.authkinds import CredentialRef, LoginAuth
from turret.errors import BadGateway, GatewayTimeout, RequestError, ServiceUnavailable
from turret.model import Service
from turret.providers import Scope
from turret.providers.login import (
    BACKOFF_MAX,
    WRONG_CREDENTIAL_TRIES,
    Backoff,
    LoginProvider,
    LoginState,
    held_back,
    next_backoff,
)

PASSWORD = "CANARY-qbit-login-0123456789abcdef"
FP = b"fingerprint"


@dataclass
class Clock:
    """A monotonic clock the test moves by hand."""

    now: float = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Peer:
    state: FakeState
    service: Service
    http: aiohttp.ClientSession
    login_state: LoginState
    clock: Clock

    async def login(
        self, password: str = PASSWORD, service: Service | None = None
    ) -> RequestError | None:
        """One call's login: None if it worked, else the error the call is answered with."""
        # A provider per call, sharing one state: as runtimes built on reload share it.
        provider = LoginProvider(service or self.service, ("admin", password), self.login_state)
        try:
            await provider.injection(Scope(provider.name, via=self.http))
        except RequestError as exc:
            return exc
        return None


@pytest.fixture
async def peer() -> AsyncIterator[Peer]:
    state = FakeState({"qbittorrent": PASSWORD})
    server = TestServer(qbittorrent_app(state), host="127.0.0.1")
    await server.start_server()
    url = str(server.make_url("")).rstrip("/")
    auth = LoginAuth("admin", CredentialRef("qbit-password"))
    clock = Clock()
    async with aiohttp.ClientSession() as http:
        yield Peer(state, Service("qbit", url, auth), http, LoginState(clock=clock), clock)
    await server.close()


def test_next_backoff_doubles_up_to_the_cap_for_upstream_errors() -> None:
    backoff = None
    delays = []
    for _ in range(12):
        backoff = next_backoff(backoff, FP, "upstream error (HTTP 503)", 0.0)
        delays.append(backoff.until)
    assert delays == [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]
    assert BACKOFF_MAX == 300


def test_next_backoff_stops_after_the_wrong_credential_tries() -> None:
    first = next_backoff(None, FP, "wrong credentials", 0.0)
    assert first.until == 1.0
    after = first
    for _ in range(WRONG_CREDENTIAL_TRIES - 1):
        after = next_backoff(after, FP, "wrong credentials", 5.0)
    assert math.isinf(after.until)
    # Upstream errors in between count as failures, not as wrong credentials.
    mixed = next_backoff(first, FP, "upstream error (HTTP 502)", 5.0)
    assert mixed.wrong == 1 and mixed.until == 7.0


def test_next_backoff_waits_the_longest_when_banned() -> None:
    assert next_backoff(None, FP, "banned", 10.0).until == 10.0 + BACKOFF_MAX


def test_held_back_says_why_and_when_without_secrets() -> None:
    service = Service("qbit", "http://127.0.0.1:1", LoginAuth("admin", PASSWORD))
    backoff = Backoff(FP, 1, 1, 12.5, "wrong credentials")
    refusal = held_back(service, backoff, 10.0)
    assert isinstance(refusal, ServiceUnavailable) and refusal.status == 503
    assert "wrong credentials" in refusal.message and "3 s" in refusal.message
    assert refusal.reason == "login held back: wrong credentials"
    assert held_back(service, backoff, 12.5) is None
    assert PASSWORD not in repr(backoff) and PASSWORD not in refusal.message


async def test_login_wrong_password_is_tried_twice_then_held(peer: Peer) -> None:
    first = await peer.login("wrong")
    assert isinstance(first, BadGateway) and first.reason == "login refused: wrong credentials"
    for _ in range(20):  # calls during the backoff do not reach qBittorrent
        held = await peer.login("wrong")
        assert isinstance(held, ServiceUnavailable) and "next attempt in 1 s" in held.message
    assert peer.state.logins == 1
    peer.clock.now += 1
    assert isinstance(await peer.login("wrong"), BadGateway)
    assert peer.state.logins == WRONG_CREDENTIAL_TRIES == 2
    for hours in range(1, 100):  # held for good: time alone never brings a third try
        peer.clock.now += 3600 * hours
        held = await peer.login("wrong")
        assert isinstance(held, ServiceUnavailable)
        assert "until the credential" in held.message
    assert peer.state.logins == 2 and peer.state.failed_logins < peer.state.max_failed_logins


async def test_login_a_new_credential_is_tried_at_once_and_clears_the_backoff(peer: Peer) -> None:
    for _ in range(2):
        await peer.login("wrong")
        peer.clock.now += 1
    assert isinstance(await peer.login("wrong"), ServiceUnavailable)
    assert await peer.login(PASSWORD) is None  # the operator fixed the credential
    assert peer.state.logins == 3 and peer.state.failed_logins == 0
    assert await peer.login(PASSWORD) is None  # the session is kept
    assert peer.state.logins == 3


async def test_login_upstream_errors_back_off_and_recover(peer: Peer) -> None:
    peer.state.login_status = 503
    error = await peer.login()
    assert isinstance(error, BadGateway)
    assert error.reason == "login refused: upstream error (HTTP 503)"
    attempts = 1
    for delay in (1, 2, 4, 8):
        peer.clock.now += delay - 0.5
        assert isinstance(await peer.login(), ServiceUnavailable)
        peer.clock.now += 0.5
        assert isinstance(await peer.login(), BadGateway)
        attempts += 1
        assert peer.state.logins == attempts
    peer.state.login_status = 200
    peer.clock.now += 16
    assert await peer.login() is None
    assert peer.state.logins == attempts + 1


async def test_login_unreachable_and_timeout_are_upstream_errors(peer: Peer) -> None:
    service = Service("gone", "http://127.0.0.1:9", peer.service.auth, timeout=1.0)
    refused = await peer.login(service=service)
    assert isinstance(refused, BadGateway) and refused.reason is not None
    assert refused.reason.startswith("login refused: upstream error (unreachable")
    assert isinstance(await peer.login(service=service), ServiceUnavailable)
    assert not isinstance(refused, GatewayTimeout)


async def test_login_banned_address_is_recognised_and_waited_out(peer: Peer) -> None:
    peer.state.failed_logins = peer.state.max_failed_logins  # banned by someone else's tries
    error = await peer.login()
    assert isinstance(error, BadGateway) and error.reason == "login refused: banned"
    peer.clock.now += BACKOFF_MAX - 1
    assert isinstance(await peer.login(), ServiceUnavailable)
    assert peer.state.logins == 1


async def test_login_concurrent_calls_during_a_failure_log_in_once(peer: Peer) -> None:
    results = await asyncio.gather(*(peer.login("wrong") for _ in range(30)))
    assert peer.state.logins == 1
    assert sum(isinstance(r, BadGateway) for r in results) == 1
    assert sum(isinstance(r, ServiceUnavailable) for r in results) == 29


async def test_login_refusal_through_the_gateway_is_503_then_audited(capgw: CapGateway) -> None:
    capgw.fakes.tokens["qbittorrent"] = "another password"
    params = {"category": "linux-isos"}
    first = await capgw.call("qbit.list_torrents", params, agent="ops/alice")
    assert first.status == 502
    for _ in range(10):
        resp = await capgw.call("qbit.list_torrents", params, agent="ops/alice")
        assert resp.status == 503
        error = (await resp.json())["error"]
        assert error["code"] == "unavailable" and "wrong credentials" in error["message"]
    assert capgw.fakes.logins == 1
    reasons = [r["TURRET_REASON"] for r in capgw.audit() if "TURRET_REASON" in r]
    assert reasons[-1] == "login held back: wrong credentials"
    assert "login refused: wrong credentials" in reasons
