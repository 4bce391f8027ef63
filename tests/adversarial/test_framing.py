"""Request smuggling and malformed framing, sent as raw bytes: refused, connection closed.

aiohttp's llhttp parser does the refusing; these cases pin that it still does, with Turret's
limits in place, and that nothing reaches the upstream or the logs.
"""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from tests.adversarial.conftest import Hardened, read_until_closed, until

TARGET = b"/v1/proxy/gitea/api/v1/repos/me/x/issues"
SMUGGLED = b"GET /v1/proxy/gitea/api/v1/admin HTTP/1.1\r\nHost: a\r\n\r\n"

# (attack id, head fields after the request line, body)
CASES = [
    ("cl-and-te", b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n", b"0\r\n\r\n" + SMUGGLED),
    ("te-and-cl", b"Transfer-Encoding: chunked\r\nContent-Length: 4\r\n", b"0\r\n\r\n" + SMUGGLED),
    ("duplicate-cl-different", b"Content-Length: 3\r\nContent-Length: 40\r\n", b"abc" + SMUGGLED),
    ("duplicate-cl-same", b"Content-Length: 3\r\nContent-Length: 3\r\n", b"abc"),
    ("cl-list", b"Content-Length: 3, 3\r\n", b"abc"),
    ("cl-plus-sign", b"Content-Length: +3\r\n", b"abc"),
    ("cl-negative", b"Content-Length: -1\r\n", b"abc"),
    ("cl-hex", b"Content-Length: 0x3\r\n", b"abc"),
    ("te-chunked-not-last", b"Transfer-Encoding: chunked, identity\r\n", b"0\r\n\r\n"),
    ("te-unknown", b"Transfer-Encoding: xchunked\r\n", b"0\r\n\r\n"),
    ("te-repeated", b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n", b"0\r\n\r\n"),
    ("te-space-before-colon", b"Transfer-Encoding : chunked\r\n", b"0\r\n\r\n"),
    ("te-obs-fold", b"Transfer-Encoding:\r\n chunked\r\n", b"0\r\n\r\n"),
    ("chunk-size-not-hex", b"Transfer-Encoding: chunked\r\n", b"zz\r\nabc\r\n0\r\n\r\n"),
    ("chunk-size-overflow", b"Transfer-Encoding: chunked\r\n", b"fffffffffffffffff1\r\nab\r\n"),
    ("chunk-data-overrun", b"Transfer-Encoding: chunked\r\n", b"3\r\nabcXX0\r\n\r\n"),
    ("chunk-bare-lf", b"Transfer-Encoding: chunked\r\n", b"3\nabc\n0\n\n"),
    ("chunk-ext-control", b"Transfer-Encoding: chunked\r\n", b"3;a=\x01\r\nabc\r\n0\r\n\r\n"),
    ("nul-in-header", b"X-Note: a\x00b\r\n", b""),
    ("bare-cr-in-header", b"X-Note: a\rb\r\n", b""),
    ("space-in-header-name", b"X Note: a\r\n", b""),
]


@pytest.mark.parametrize(("fields", "body"), [pytest.param(f, b, id=i) for i, f, b in CASES])
async def test_framing_ambiguous_requests_are_refused(
    hardened: Hardened, fields: bytes, body: bytes
) -> None:
    """Attack: framing two parsers could read differently, to smuggle a second request."""
    head = (
        b"POST " + TARGET + b" HTTP/1.1\r\nHost: turret\r\n"
        b"Authorization: Bearer " + hardened.token.encode() + b"\r\n" + fields + b"\r\n"
    )
    data, closed = await hardened.raw(head + body)
    assert data.startswith((b"HTTP/1.0 400", b"HTTP/1.1 400")), data[:80]
    assert closed
    assert data.count(b"HTTP/1.") == 1  # no second (smuggled) response
    assert hardened.upstream.received == []


@pytest.mark.parametrize(
    "request_line",
    [
        pytest.param(b"GET " + TARGET + b"\n", id="bare-lf-request-line"),
        pytest.param(b"GET " + TARGET + b" HTTP/2.7\r\n", id="bogus-version"),
        pytest.param(b"GET  " + TARGET + b" HTTP/1.1\r\n", id="double-space"),
        pytest.param(b"GET " + TARGET + b"#frag HTTP/1.1\r\n", id="fragment-in-target"),
    ],
)
async def test_framing_malformed_request_line_is_refused(
    hardened: Hardened, request_line: bytes
) -> None:
    """Attack: a request line other parsers might split differently."""
    data, closed = await hardened.raw(
        request_line + b"Authorization: Bearer " + hardened.token.encode() + b"\r\n\r\n"
    )
    status_line = data.split(b"\r\n", 1)[0]
    assert status_line.startswith(b"HTTP/") and b" 400 " in status_line, data[:80]
    assert closed
    assert hardened.upstream.received == []


async def test_framing_token_in_malformed_header_is_not_logged(
    hardened: Hardened, caplog: pytest.LogCaptureFixture
) -> None:
    """Attack: make the parser fail on the Authorization line so its error log quotes the token."""
    bad = b"GET " + TARGET + b" HTTP/1.1\r\nAuthorization: Bearer " + hardened.token.encode()
    data, closed = await hardened.raw(bad + b"\x00\r\n\r\n")
    assert data.startswith(b"HTTP/1.0 400") and closed
    assert "refused malformed HTTP request" in caplog.text
    # Nor does the refusal quote it back: the answer is the JSON error shape, nothing more.
    assert hardened.token.encode() not in data
    assert b'"code": "bad_request"' in data
    # The fixture asserts the token appears in no log line and no audit record.


async def test_framing_pipelined_denied_request_does_not_taint_next(hardened: Hardened) -> None:
    """Attack: pipeline a denied request with a body, then an allowed one, on one connection."""
    auth = b"Authorization: Bearer " + hardened.token.encode() + b"\r\n"
    first = b"POST /v1/proxy/gitea/api/v1/admin HTTP/1.1\r\nHost: t\r\n" + auth
    first += b"Content-Length: " + str(len(SMUGGLED)).encode() + b"\r\n\r\n" + SMUGGLED
    second = b"GET /v1/proxy/gitea/api/v1/user HTTP/1.1\r\nHost: t\r\n" + auth
    second += b"Connection: close\r\n\r\n"
    data, _ = await hardened.raw(first + second)
    assert data.count(b"HTTP/1.1 403") == 1 and data.count(b"HTTP/1.1 200") == 1
    assert [r.raw_path for r in hardened.upstream.received] == ["/api/v1/user"]


async def test_framing_connect_method_is_not_a_tunnel(hardened: Hardened) -> None:
    """Attack: CONNECT through Turret to an arbitrary host and port."""
    data, _ = await hardened.raw(
        b"CONNECT 127.0.0.1:22 HTTP/1.1\r\nHost: 127.0.0.1:22\r\nAuthorization: Bearer "
        + hardened.token.encode()
        + b"\r\n\r\nSSH-2.0-x\r\n"
    )
    assert data.startswith(b"HTTP/1.1 4"), data[:80]
    assert hardened.upstream.received == []
    record = hardened.audit()[0]
    assert (record["TURRET_METHOD"], record["TURRET_DECISION"]) == ("CONNECT", "deny")


@pytest.mark.parametrize(
    ("head", "body"),
    [
        pytest.param(
            b"Content-Encoding: gzip\r\nContent-Length: 12\r\n", b"not gzip!!!!", id="gzip"
        ),
        pytest.param(
            b"Content-Encoding: deflate\r\nContent-Length: 12\r\n", b"no deflate!!", id="deflate"
        ),
    ],
)
async def test_framing_body_that_cannot_be_decoded_is_400(
    hardened: Hardened, head: bytes, body: bytes
) -> None:
    """Attack: a body whose content coding is garbage, found only after the head was accepted, to
    crash the handler (500, no outcome record) instead of being refused."""
    reader, writer = await asyncio.open_connection("127.0.0.1", hardened.port)
    try:
        writer.write(
            b"POST /v1/proxy/gitea/api/v1/repos/me/x HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer "
            + hardened.token.encode()
            + b"\r\n"
            + head
            + b"\r\n"
        )
        # The body follows once the handler is waiting for it: its decision is on record.
        await until(lambda: len(hardened.audit()) == 1)
        writer.write(body)
        data, closed = await read_until_closed(reader, 5.0)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    assert data.startswith(b"HTTP/1.1 400 "), data[:200]
    assert b'"code": "bad_request"' in data and closed
    assert hardened.upstream.received == []
    decision, outcome = hardened.audit()
    assert decision["TURRET_DECISION"] == "allow"
    assert (outcome["TURRET_EVENT"], outcome["TURRET_STATUS"]) == ("outcome", "400")
