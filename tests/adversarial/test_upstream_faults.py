"""A hostile or broken upstream: every fault ends in a clean 502/504 within the service timeout,
never a partial success, never a retried POST, and never an upstream detail in the message."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import socket
import ssl
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.adversarial.conftest import Hardened, MakeHardened, error_of
from tests.adversarial.test_desync import ScriptServer, answer, start_script

TIMEOUT = 1.0
Behaviour = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def _head(length: int) -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n" % length


async def _silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.read()  # until Turret gives up and closes


async def _partial_head(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Le")
    await reader.read()


async def _trickle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(_head(1000))
    for _ in range(200):  # one byte every 50 ms: the body would take 50 s
        writer.write(b"x")
        await writer.drain()
        await asyncio.sleep(0.05)


async def _reset_mid_body(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(_head(1000) + b"x" * 100)
    await writer.drain()
    _reset(writer)


async def _truncated(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(_head(1000) + b"x" * 100)
    await writer.drain()
    writer.close()


async def _bad_status(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"HTTP/1.1 2OO OK\r\nContent-Length: 2\r\n\r\nok")
    await reader.read()


async def _huge_header(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * 200_000 + b"\r\n\r\n")
    await reader.read()


async def _cl_and_te(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nevil!\r\n0\r\n\r\n"
    )
    await reader.read()


async def _oversized(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(_head(70000) + b"x" * 70000)
    await reader.read()


async def _reset_at_once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    _reset(writer)


async def _desync(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    # A second, unrequested response rides behind the first on the keep-alive connection.
    writer.write(_head(2) + b"ok" + _head(5) + b"evil!")
    while await reader.readuntil(b"\r\n\r\n"):
        writer.write(_head(4) + b"good")


def _reset(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


BEHAVIOURS: dict[str, Behaviour] = {
    "silent": _silent,
    "partial-head": _partial_head,
    "trickle": _trickle,
    "reset-mid-body": _reset_mid_body,
    "truncated": _truncated,
    "bad-status": _bad_status,
    "huge-header": _huge_header,
    "cl-and-te": _cl_and_te,
    "oversized": _oversized,
    "reset-at-once": _reset_at_once,
    "desync": _desync,
}


class FaultServer:
    """A raw TCP server on loopback that misbehaves as the request path says."""

    def __init__(self) -> None:
        self.requests: list[bytes] = []
        self._writers: list[asyncio.StreamWriter] = []
        self.port = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.append(writer)
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            head = await reader.readuntil(b"\r\n\r\n")
            self.requests.append(head)
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    await reader.readexactly(int(line.split(b":")[1]))
            name = head.split(b" ")[1].decode().strip("/")
            await BEHAVIOURS[name](reader, writer)

    async def close(self) -> None:
        for writer in self._writers:
            writer.transport.abort()
        self._server.close()
        await self._server.wait_closed()


@pytest.fixture
async def faulty(make_hardened: MakeHardened) -> AsyncIterator[tuple[Hardened, FaultServer]]:
    fault = FaultServer()
    await fault.start()
    gw = await make_hardened(
        services=(
            f"  faulty:\n    url: http://127.0.0.1:{fault.port}\n"
            f"    auth: {{bearer: gitea-token}}\n    timeout: {TIMEOUT}\n"
            "    max_response_bytes: 65536\n"
        ),
        grants="      - service: faulty\n        methods: [GET, POST]\n        paths: ['/*']\n",
    )
    yield gw, fault
    await fault.close()


async def _fails(gw: Hardened, method: str, target: str, status: int, code: str) -> float:
    started = time.monotonic()
    resp = await gw.request(method, target, data=b"payload" if method == "POST" else None)
    elapsed = time.monotonic() - started
    assert resp.status == status
    error = await error_of(resp)
    assert error["code"] == code
    for detail in ("127.0.0.1", "http://", "Content-", "Authorization", "Bearer"):
        assert detail not in error["message"]
    assert elapsed < TIMEOUT + 1.5
    return elapsed


@pytest.mark.parametrize(
    ("behaviour", "status", "code"),
    [
        pytest.param("silent", 504, "upstream_timeout", id="no-answer"),
        pytest.param("partial-head", 504, "upstream_timeout", id="head-never-completes"),
        pytest.param("trickle", 504, "upstream_timeout", id="body-trickles"),
        pytest.param("reset-mid-body", 502, "upstream_error", id="reset-mid-body"),
        pytest.param("truncated", 502, "upstream_error", id="truncated-body"),
        pytest.param("bad-status", 502, "upstream_error", id="malformed-status-line"),
        pytest.param("huge-header", 502, "upstream_error", id="oversized-header"),
        pytest.param("cl-and-te", 502, "upstream_error", id="ambiguous-response-framing"),
        pytest.param("oversized", 502, "upstream_error", id="body-over-limit"),
    ],
)
async def test_upstream_fault_is_clean_error(
    faulty: tuple[Hardened, FaultServer], behaviour: str, status: int, code: str
) -> None:
    """Attack: an upstream that stalls, trickles, cuts off or garbles its response."""
    gw, _ = faulty
    await _fails(gw, "GET", f"/v1/proxy/faulty/{behaviour}", status, code)
    assert gw.audit()[-1]["TURRET_STATUS"] == str(status)


async def test_upstream_reset_post_is_not_retried(faulty: tuple[Hardened, FaultServer]) -> None:
    """Attack: reset the connection after a POST so a retrying client would send it twice."""
    gw, fault = faulty
    await _fails(gw, "POST", "/v1/proxy/faulty/reset-at-once", 502, "upstream_error")
    assert len(fault.requests) == 1


async def test_upstream_connection_refused_is_502(make_hardened: MakeHardened) -> None:
    """Attack (fault): the upstream port refuses connections."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again at once: nothing listens there
    gw = await make_hardened(
        services=f"  gone:\n    url: http://127.0.0.1:{port}\n    auth: {{bearer: gitea-token}}\n",
        grants="      - service: gone\n        methods: [GET]\n        paths: ['/*']\n",
    )
    await _fails(gw, "GET", "/v1/proxy/gone/x", 502, "upstream_error")


def _self_signed(directory: Path) -> ssl.SSLContext:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    (directory / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (directory / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(directory / "cert.pem", directory / "key.pem")
    return context


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
async def test_upstream_untrusted_tls_certificate_is_502(
    make_hardened: MakeHardened, tmp_path: Path, host: str
) -> None:
    """Attack: a man in the middle presents a self-signed certificate for the upstream."""
    hits: list[str] = []

    async def handler(request: web.Request) -> web.Response:
        hits.append(request.path)
        return web.Response(text="secret data")

    app = web.Application()
    app.router.add_get("/{tail:.*}", handler)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server(ssl=_self_signed(tmp_path))
    gw = await make_hardened(
        hosts={"localhost": [["127.0.0.1"]]},
        services=(
            f"  tls:\n    url: https://{host}:{server.port}\n    auth: {{bearer: gitea-token}}\n"
            "    allow_networks: ['127.0.0.0/8']\n"
        ),
        grants="      - service: tls\n        methods: [GET]\n        paths: ['/*']\n",
    )
    await _fails(gw, "GET", "/v1/proxy/tls/x", 502, "upstream_error")
    assert hits == []
    await server.close()


async def test_upstream_response_splitting_does_not_reach_next_request(
    faulty: tuple[Hardened, FaultServer],
) -> None:
    """Attack: an upstream queues an extra response so the next request (maybe another agent's)
    on the pooled connection reads the attacker's bytes."""
    gw, _ = faulty
    first = await gw.request("GET", "/v1/proxy/faulty/desync")
    assert (first.status, await first.read()) == (200, b"ok")
    second = await gw.request("GET", "/v1/proxy/faulty/desync")
    # Its own answer: "ok" on a fresh connection, or "good" on a reused one, never "evil!".
    assert second.status == 200
    assert await second.read() in {b"ok", b"good"}


@pytest.mark.parametrize(
    ("split", "seen"),
    [
        pytest.param(b"\xe9", "\ufffd".encode(), id="latin-1-byte"),
        pytest.param(b"\xff", "\ufffd".encode(), id="invalid-byte"),
        pytest.param(b"\x80\x80", "\ufffd\ufffd".encode(), id="lone-continuations"),
        pytest.param(b"\xed\xa0\x80", "\ufffd\ufffd\ufffd".encode(), id="encoded-surrogate"),
    ],
)
async def test_upstream_header_non_utf8_bytes_cannot_rejoin_a_secret(
    make_hardened: MakeHardened, canaries: dict[str, str], split: bytes, seen: bytes
) -> None:
    """Attack: the upstream echoes the credential in a header, split by bytes that are not UTF-8.
    aiohttp reads them as surrogate escapes, which its writer drops: the echo guard must compare
    what the agent will read, so each becomes U+FFFD and the halves never rejoin."""
    secret = canaries["gitea-token"].encode()
    value = secret[:9] + split + secret[9:]
    for name in (b"X-Leak", b"Location"):
        server = ScriptServer({"/first": answer(b"ok", name + b": " + value)})
        try:
            gw = await start_script(make_hardened, server)
            raw, _ = await gw.raw(
                b"GET /v1/proxy/raw/first HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                b"Authorization: Bearer " + gw.token.encode() + b"\r\n\r\n"
            )
            assert raw.startswith(b"HTTP/1.1 200 ")
            assert secret[:9] + seen + secret[9:] in raw
            assert secret not in raw
        finally:
            await server.close()


@pytest.mark.parametrize(
    "header",
    [
        pytest.param(b"X-Leak: a\r\n SECRET", id="folded-continuation"),
        pytest.param(b"X-Leak:\r\n\tSECRET", id="folded-empty-first-line"),
        pytest.param(b"X-Leak: caf\xc3\xa9 SECRET \xe9", id="utf8-and-latin1-around"),
    ],
)
async def test_upstream_header_folded_or_non_ascii_secret_is_redacted(
    make_hardened: MakeHardened, canaries: dict[str, str], header: bytes
) -> None:
    """Attack: the credential echoed in a header the upstream folds (obs-fold) or wraps in
    non-ASCII bytes: it is found in the bytes the agent reads, and redacted there."""
    secret = canaries["gitea-token"].encode()
    server = ScriptServer({"/first": answer(b"ok", header.replace(b"SECRET", secret))})
    try:
        gw = await start_script(make_hardened, server)
        raw, _ = await gw.raw(
            b"GET /v1/proxy/raw/first HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
            b"Authorization: Bearer " + gw.token.encode() + b"\r\n\r\n"
        )
        assert raw.startswith(b"HTTP/1.1 200 ")
        assert secret not in raw
        assert b"[REDACTED]" in raw
    finally:
        await server.close()


@pytest.mark.parametrize("char", [b"\x7f", b"\x01", b"\x1b", b"\x0b"])
async def test_upstream_header_control_character_is_502(
    make_hardened: MakeHardened, canaries: dict[str, str], char: bytes
) -> None:
    """Attack (fault): a control character in a header value, which Turret's server could not
    write: a clean 502 (not a dropped connection), quoting nothing of the header."""
    secret = canaries["gitea-token"].encode()
    server = ScriptServer({"/first": answer(b"ok", b"X-Leak: " + secret + char)})
    try:
        gw = await start_script(make_hardened, server)
        resp = await gw.request("GET", "/v1/proxy/raw/first")
        assert resp.status == 502
        assert (await error_of(resp))["code"] == "upstream_error"
    finally:
        await server.close()
