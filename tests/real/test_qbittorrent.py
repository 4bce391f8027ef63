"""Turret's qBittorrent capabilities against a real qBittorrent 4.5 (issue 10, section 7).

What the fakes assume, checked against the real WebUI: adding a plain magnet and listing it,
magnets that would make qBittorrent connect elsewhere never reaching it, the login backoff
keeping the host's loopback below the ban threshold, and the answer of a ban.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import aiohttp
import pytest

from tests.real.conftest import Build, RealGateway, qbit_service
from tests.real.peers import Qbittorrent

pytestmark = pytest.mark.timeout(180)
BANNED = "Your IP address has been banned after too many failed authentication attempts."
WRONG = "CANARY-qbit-wrong-password-5f0c9a1e"


@dataclass
class Clock:
    """Turret's login clock, moved by hand so backoffs pass without sleeping."""

    now: float = 1000.0

    def __call__(self) -> float:
        return self.now


def magnet(info_hash: str, extra: str = "") -> str:
    return f"magnet:?xt=urn:btih:{info_hash}&dn=turret-real-test{extra}"


async def poll(check: Callable[[], Awaitable[bool]], within: float = 20.0) -> bool:
    """Whether `check` came true before the deadline: qBittorrent adds torrents, and writes its
    log, asynchronously."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if await check():
            return True
        await asyncio.sleep(0.05)  # the interval between polls, not a wait for an event
    return False


async def logged(peer: Qbittorrent, marker: str, count: int) -> bool:
    """Whether qBittorrent's log came to hold exactly `count` lines with `marker`."""

    async def reached() -> bool:
        return len(peer.log_lines(marker)) >= count

    return await poll(reached) and len(peer.log_lines(marker)) == count


async def hashes(gateway: RealGateway, service: str = "qbit") -> set[str]:
    resp = await gateway.call(f"{service}.list_torrents", {})
    assert resp.status == 200, await resp.text()
    return {t["hash"] for t in (await resp.json())["result"]["torrents"]}


def login_reasons(gateway: RealGateway) -> list[str]:
    """The audited reasons of calls refused because of Turret's login, in order."""
    reasons = [record.get("TURRET_REASON", "") for record in gateway.audit()]
    return [reason for reason in reasons if reason.startswith("login")]


async def qbit_gateway(gateways: Build, peer: Qbittorrent, wrong: bool = False) -> RealGateway:
    """A gateway with service `qbit` (the right password) and, if asked, `qbitwrong`."""
    services = qbit_service("qbit", peer.url, "qbit-password")
    credentials = {"qbit-password": peer.password}
    if wrong:
        services += qbit_service("qbitwrong", peer.url, "qbit-wrong")
        credentials["qbit-wrong"] = WRONG
    return await gateways(services, credentials, ["qbit.*", "qbitwrong.*"] if wrong else ["qbit.*"])


async def test_real_qbittorrent_adds_a_plain_magnet_and_lists_it(
    gateways: Build, qbit: Qbittorrent
) -> None:
    gateway = await qbit_gateway(gateways, qbit)
    info_hash = secrets.token_hex(20)
    resp = await gateway.call("qbit.add_torrent", {"magnet": magnet(info_hash)})
    assert resp.status == 200, await resp.text()

    async def listed() -> bool:
        return info_hash in await hashes(gateway)

    assert await poll(listed)


@pytest.mark.parametrize(
    "extra",
    [
        "&tr=http://127.0.0.1:9/announce",
        "&tr=udp%3A%2F%2F127.0.0.1%3A9",
        "&%74r=http://127.0.0.1:9/announce",
        "&ws=http://127.0.0.1:9/seed",
        "&x.pe=127.0.0.1:9",
        "&xs=http://127.0.0.1:9/t.torrent",
    ],
)
async def test_real_qbittorrent_never_sees_a_magnet_that_names_an_address(
    gateways: Build, qbit: Qbittorrent, extra: str
) -> None:
    gateway = await qbit_gateway(gateways, qbit)
    refused = secrets.token_hex(20)
    resp = await gateway.call("qbit.add_torrent", {"magnet": magnet(refused, extra)})
    assert resp.status == 422, await resp.text()
    # qBittorrent adds torrents in order: once a plain magnet sent afterwards is listed, the
    # refused one would be listed too, had it reached qBittorrent.
    marker = secrets.token_hex(20)
    resp = await gateway.call("qbit.add_torrent", {"magnet": magnet(marker)})
    assert resp.status == 200, await resp.text()

    async def marker_listed() -> bool:
        return marker in await hashes(gateway)

    assert await poll(marker_listed)
    assert refused not in await hashes(gateway)


async def test_real_qbittorrent_wrong_password_backs_off_and_never_bans_loopback(
    gateways: Build, qbit: Qbittorrent
) -> None:
    gateway = await qbit_gateway(gateways, qbit, wrong=True)
    clock = Clock()
    gateway.set_login_clock(clock)
    before = len(qbit.log_lines("WebAPI login failure"))
    answers = []
    for step in (0.0, 0.0, 10.0, 0.0, 3600.0, 86400.0):  # seconds on Turret's clock per call
        clock.now += step
        resp = await gateway.call("qbitwrong.list_torrents", {})
        answers.append((resp.status, (await resp.json())["error"]["message"]))
    statuses = [status for status, _ in answers]
    # Tried at once, held back for 1 s, tried again after it, then never again.
    assert statuses == [502, 503, 502, 503, 503, 503]
    assert all("wrong credentials" in message for _, message in answers)
    assert "will not try again" in answers[-1][1]
    refused, held = "login refused: wrong credentials", "login held back: wrong credentials"
    assert login_reasons(gateway) == [refused, held, refused, held, held, held]
    # qBittorrent saw exactly two failed logins: below its threshold of 5, so the right
    # password still logs in from the same address.
    successes = len(qbit.log_lines("WebAPI login success"))
    await hashes(gateway, "qbit")
    assert await logged(qbit, "WebAPI login success", successes + 1)
    assert await logged(qbit, "WebAPI login failure", before + 2)
    assert not qbit.log_lines("IP has been banned")


async def test_real_qbittorrent_ban_answer_is_recognised(
    gateways: Build, banning_qbit: Qbittorrent
) -> None:
    login = banning_qbit.url + "/api/v2/auth/login"
    async with aiohttp.ClientSession() as http:
        for expected in ((200, "Fails."), (403, BANNED)):  # banned after one failure (here)
            form = {"username": "admin", "password": WRONG}
            async with http.post(login, data=form) as resp:
                assert (resp.status, await resp.text()) == expected
    gateway = await qbit_gateway(gateways, banning_qbit)
    clock = Clock()
    gateway.set_login_clock(clock)
    resp = await gateway.call("qbit.list_torrents", {})
    assert resp.status == 502
    assert "banned" in (await resp.json())["error"]["message"]
    clock.now += 299
    held = await gateway.call("qbit.list_torrents", {})
    assert held.status == 503
    assert "banned" in (await held.json())["error"]["message"]
    assert login_reasons(gateway) == ["login refused: banned", "login held back: banned"]
    # Held back: the right password was tried once, and refused as banned, not as wrong.
    assert await logged(banning_qbit, "IP has been banned", 2)


async def test_real_qbittorrent_expired_session_logs_in_again(
    gateways: Build, qbit: Qbittorrent
) -> None:
    gateway = await qbit_gateway(gateways, qbit)
    await hashes(gateway)
    session = gateway.login_state().session
    assert session is not None
    async with aiohttp.ClientSession() as http:  # end Turret's session behind its back
        logout = qbit.url + "/api/v2/auth/logout"
        async with http.post(logout, headers={"Cookie": session.cookie}) as resp:
            assert resp.status == 200
    await hashes(gateway)  # answered 403, so Turret logged in again and retried
    renewed = gateway.login_state().session
    assert renewed is not None and renewed is not session


async def test_real_qbittorrent_duplicate_magnet_is_not_confirmed(
    gateways: Build, qbit: Qbittorrent
) -> None:
    gateway = await qbit_gateway(gateways, qbit)
    link = magnet(secrets.token_hex(20))
    first = await gateway.call("qbit.add_torrent", {"magnet": link})
    assert first.status == 200, await first.text()
    # qBittorrent 4.5 does not answer "Ok." for a torrent it already has: Turret says so.
    again = await gateway.call("qbit.add_torrent", {"magnet": link})
    assert again.status == 502
    error = (await again.json())["error"]
    assert (error["code"], error["message"]) == (
        "upstream_error",
        "qbit.add_torrent: the service did not confirm the action",
    )


async def test_real_qbittorrent_lists_by_category(gateways: Build, qbit: Qbittorrent) -> None:
    gateway = await qbit_gateway(gateways, qbit)
    info_hash = secrets.token_hex(20)
    added = await gateway.call(
        "qbit.add_torrent", {"magnet": magnet(info_hash), "category": "linux-isos"}
    )
    assert added.status == 200, await added.text()

    async def in_category() -> bool:
        resp = await gateway.call("qbit.list_torrents", {"category": "linux-isos"})
        torrents = (await resp.json())["result"]["torrents"]
        return any(t["hash"] == info_hash and t["category"] == "linux-isos" for t in torrents)

    assert await poll(in_category)
    other = await gateway.call("qbit.list_torrents", {"category": "other"})
    assert info_hash not in {t["hash"] for t in (await other.json())["result"]["torrents"]}


async def test_real_qbittorrent_ban_leaves_a_live_session_working(
    gateways: Build, banning_qbit: Qbittorrent
) -> None:
    gateway = await qbit_gateway(gateways, banning_qbit)
    await hashes(gateway)  # logged in before anything banned the address
    login = banning_qbit.url + "/api/v2/auth/login"
    async with aiohttp.ClientSession() as http:
        for _ in range(2):  # another local client gets loopback banned
            async with http.post(login, data={"username": "admin", "password": WRONG}):
                pass
    assert await logged(banning_qbit, "IP has been banned", 1)
    await hashes(gateway)  # the ban refuses logins only
    assert login_reasons(gateway) == []
