"""Resource exhaustion: oversized heads and bodies, slow clients, floods, runaway agents."""

from __future__ import annotations

import asyncio
import contextlib
import time
import zlib
from collections.abc import AsyncIterator

import pytest

from tests.adversarial.conftest import MakeHardened, error_of, read_until_closed, until

SMALL_HEAD = "limits:\n  max_headers: 20\n  max_header_bytes: 1024\n  max_url_bytes: 1024\n"


@pytest.mark.parametrize(
    ("what", "extra_head", "target_tail"),
    [
        pytest.param("count", "".join(f"X-H{i}: v\r\n" for i in range(30)), "", id="header-count"),
        pytest.param("size", "X-Big: " + "a" * 2000 + "\r\n", "", id="header-size"),
        pytest.param("url", "", "?q=" + "a" * 2000, id="url-length"),
    ],
)
async def test_exhaustion_oversized_head_is_refused(
    make_hardened: MakeHardened, what: str, extra_head: str, target_tail: str
) -> None:
    """Attack: a request head too big to buffer (many headers, a huge header, a huge URL)."""
    gw = await make_hardened(limits=SMALL_HEAD)
    head = (
        f"GET /v1/proxy/gitea/api/v1/user{target_tail} HTTP/1.1\r\nHost: t\r\n"
        f"Authorization: Bearer {gw.token}\r\n{extra_head}\r\n"
    )
    data, closed = await gw.raw(head.encode())
    assert data.startswith(b"HTTP/1.0 400") and closed, what
    assert gw.upstream.received == []


async def _deflate_bomb(size: int) -> AsyncIterator[bytes]:
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)  # gzip container
    block = b"\0" * (1 << 20)
    for _ in range(size >> 20):
        yield packer.compress(block)
    yield packer.flush()


async def test_exhaustion_compressed_request_body_bomb_is_413(make_hardened: MakeHardened) -> None:
    """Attack: a small gzip request body that inflates to 64 MiB (decompression bomb)."""
    gw = await make_hardened(
        grants="      - service: apikey\n        methods: [POST]\n        paths: ['/echo/**']\n"
    )
    started = time.monotonic()
    resp = await gw.request(
        "POST",
        "/v1/proxy/apikey/echo/x",
        data=_deflate_bomb(64 << 20),
        headers={"Content-Encoding": "gzip"},
    )
    assert resp.status == 413
    assert (await error_of(resp))["code"] == "request_too_large"
    assert gw.upstream.received == []
    assert time.monotonic() - started < 10


async def test_exhaustion_slowloris_head_is_cut_off(make_hardened: MakeHardened) -> None:
    """Attack: slowloris: send a request head a few bytes at a time and never finish it."""
    gw = await make_hardened(limits="limits:\n  header_timeout: 0.5\n")
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    started = time.monotonic()
    writer.write(b"GET /v1/proxy/gitea/api/v1/user HTTP/1.1\r\nHost: t\r\nX-A: ")
    closed = False
    for _ in range(40):  # keep trickling until the server hangs up
        try:
            writer.write(b"a")
            await writer.drain()
        except ConnectionError:
            closed = True
            break
        with contextlib.suppress(TimeoutError):
            if await asyncio.wait_for(reader.read(1024), 0.1) == b"":
                closed = True
                break
    writer.close()
    assert closed and time.monotonic() - started < 3
    assert gw.upstream.received == []


async def test_exhaustion_idle_connection_is_closed(make_hardened: MakeHardened) -> None:
    """Attack: open connections and send nothing, to hold sockets forever."""
    gw = await make_hardened(limits="limits:\n  header_timeout: 0.5\n")
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    data, closed = await read_until_closed(reader, 5)
    writer.close()
    assert closed and data == b""


async def test_exhaustion_slow_body_is_408(make_hardened: MakeHardened) -> None:
    """Attack: announce a body and deliver it too slowly (slow POST)."""
    gw = await make_hardened(limits="limits:\n  body_timeout: 0.5\n")
    head = (
        "POST /v1/proxy/gitea/api/v1/repos/me/x/issues HTTP/1.1\r\nHost: t\r\n"
        f"Authorization: Bearer {gw.token}\r\nContent-Length: 100\r\n\r\n0123456789"
    )
    started = time.monotonic()
    data, closed = await gw.raw(head.encode(), read_for=5)
    assert data.startswith(b"HTTP/1.1 408") and closed
    assert b'"request_timeout"' in data
    assert time.monotonic() - started < 4
    assert gw.upstream.received == []
    assert gw.audit()[-1]["TURRET_STATUS"] == "408"


async def test_exhaustion_connection_flood_is_capped(make_hardened: MakeHardened) -> None:
    """Attack: open more connections than Turret allows, to exhaust file descriptors."""
    gw = await make_hardened(max_connections=3)
    held = [await asyncio.open_connection("127.0.0.1", gw.port) for _ in range(3)]
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    data, closed = await read_until_closed(reader, 5)
    writer.close()
    assert data.startswith(b"HTTP/1.1 503") and b'"unavailable"' in data and closed
    _, first = held.pop()
    first.close()
    deadline = time.monotonic() + 5
    while True:  # the freed slot becomes usable once the server has seen the close
        resp = await gw.client.session.get(
            gw.url("/v1/proxy/gitea/api/v1/user"),
            headers={**gw.auth(), "Connection": "close"},
        )
        if resp.status == 200 or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)
    assert resp.status == 200
    for _, w in held:
        w.close()


async def test_exhaustion_rate_limit_is_429_per_agent(make_hardened: MakeHardened) -> None:
    """Attack: a runaway agent floods requests; it is throttled, the other agent is not."""
    gw = await make_hardened(agent_limits="limits: {requests_per_second: 0.5, burst: 2}")
    statuses = [(await gw.request("GET", "/v1/proxy/gitea/api/v1/user")).status for _ in range(2)]
    limited = await gw.request("GET", "/v1/proxy/gitea/api/v1/user")
    assert statuses == [200, 200] and limited.status == 429
    assert (await error_of(limited))["code"] == "rate_limited"
    assert int(limited.headers["Retry-After"]) == 2
    other = await gw.request("GET", "/v1/proxy/gitea/api/v1/user", headers=gw.auth(gw.other_token))
    assert other.status == 200
    assert len(gw.upstream.received) == 3
    denied = [r for r in gw.audit() if r.get("TURRET_STATUS") == "429"]
    assert len(denied) == 1 and "rate limit" in denied[0]["TURRET_REASON"]


async def test_exhaustion_concurrency_limit_is_429(make_hardened: MakeHardened) -> None:
    """Attack: an agent holds many slow requests open to starve the upstream pool."""
    gw = await make_hardened(agent_limits="limits: {max_concurrent: 1}")
    slow = asyncio.ensure_future(gw.request("GET", "/v1/proxy/gitea/hang"))
    await until(lambda: bool(gw.upstream.received))
    second = await gw.request("GET", "/v1/proxy/gitea/api/v1/user")
    assert second.status == 429 and second.headers["Retry-After"] == "1"
    other = await gw.request("GET", "/v1/proxy/gitea/api/v1/user", headers=gw.auth(gw.other_token))
    assert other.status == 200
    gw.upstream.release.set()
    assert (await slow).status == 200
    assert (await gw.request("GET", "/v1/proxy/gitea/api/v1/user")).status == 200
