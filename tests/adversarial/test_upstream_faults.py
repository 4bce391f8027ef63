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
