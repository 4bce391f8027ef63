"""Content and transfer codings: an answer is passed on only in a coding Turret decoded (so the
echo guard read what the agent reads); any other coding is a 502, never the coded bytes with
the header dropped."""

from __future__ import annotations

import gzip
import zlib

import pytest

from tests.adversarial.conftest import MakeHardened, error_of
from tests.adversarial.test_desync import ScriptServer, answer, start_script
from turret.connector import ACCEPT_ENCODING


def _chunked(body: bytes) -> bytes:
    return b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)


def _coded(secret: bytes) -> dict[str, tuple[bytes, bytes]]:
    """Coding name -> (header lines, body): each carries `secret` in a coding not decoded."""
    gz = gzip.compress(secret)
    twice = gzip.compress(gz)
    return {
        "stacked": (b"Content-Encoding: gzip, gzip", twice),
        "stacked-fields": (b"Content-Encoding: gzip\r\nContent-Encoding: gzip", twice),
        "deflate-then-gzip": (
            b"Content-Encoding: deflate, gzip",
            gzip.compress(zlib.compress(secret)),
        ),
        "alias-x-gzip": (b"Content-Encoding: x-gzip", gz),
        "mixed-identity": (b"Content-Encoding: gzip, identity", gz),
        "identity-first": (b"Content-Encoding: identity, gzip", gz),
        "compress": (b"Content-Encoding: compress", gz),
        "unknown": (b"Content-Encoding: foo", gz),
        "empty-value": (b"Content-Encoding: ", gz),
        "comma-only": (b"Content-Encoding: ,", gz),
        "br-not-installed": (b"Content-Encoding: br", gz),
        "zstd-not-installed": (b"Content-Encoding: zstd", gz),
        "gzip-not-gzip": (b"Content-Encoding: gzip", b"\x1f\x8b\x08\x00garbage" + secret),
        "deflate-not-deflate": (b"Content-Encoding: deflate", secret),
    }


CODINGS = list(_coded(b"x"))

TRANSFER = {
    "gzip-chunked": b"Transfer-Encoding: gzip, chunked",
    "chunked-chunked": b"Transfer-Encoding: chunked, chunked",
    "two-fields": b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked",
    "identity-chunked": b"Transfer-Encoding: identity, chunked",
    "x-chunked": b"Transfer-Encoding: x-chunked",
}


async def _refused(make_hardened: MakeHardened, first: bytes) -> None:
    server = ScriptServer({"/first": first})
    try:
        gw = await start_script(make_hardened, server)
        resp = await gw.request("GET", "/v1/proxy/raw/first")
        assert resp.status == 502
        assert (await error_of(resp))["code"] == "upstream_error"
        assert gw.audit()[-1]["TURRET_STATUS"] == "502"
        # The next answer on the same upstream is a clean one on a fresh connection.
        good = await gw.request("GET", "/v1/proxy/raw/good", headers=gw.auth(gw.other_token))
        assert (good.status, await good.read()) == (200, b"good")
    finally:
        await server.close()


@pytest.mark.parametrize("coding", CODINGS)
async def test_content_coding_not_decoded_is_502(
    make_hardened: MakeHardened, canaries: dict[str, str], coding: str
) -> None:
    """Attack: the upstream echoes the credential in a coding aiohttp does not decode (stacked,
    aliased, mixed, unknown, empty, not installed, or a body that is not what it claims)."""
    head, body = _coded(canaries["gitea-token"].encode())[coding]
    await _refused(make_hardened, answer(body, head))


@pytest.mark.parametrize("coding", list(TRANSFER))
async def test_content_coding_transfer_coding_other_than_chunked_is_502(
    make_hardened: MakeHardened, canaries: dict[str, str], coding: str
) -> None:
    """Attack: a transfer coding other than one plain `chunked` (the body beneath is coded)."""
    body = _chunked(gzip.compress(canaries["gitea-token"].encode()))
    await _refused(make_hardened, b"HTTP/1.1 200 OK\r\n" + TRANSFER[coding] + b"\r\n\r\n" + body)


async def test_content_coding_identity_transfer_coding_is_502(
    make_hardened: MakeHardened, canaries: dict[str, str]
) -> None:
    """Attack: `Transfer-Encoding: identity` (obsolete; the body runs to the close)."""
    body = gzip.compress(canaries["gitea-token"].encode())
    await _refused(make_hardened, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: identity\r\n\r\n" + body)


@pytest.mark.parametrize(
    ("head", "body"),
    [
        pytest.param(b"Content-Encoding: gzip", gzip.compress(b"hello"), id="gzip"),
        pytest.param(b"Content-Encoding: GZIP", gzip.compress(b"hello"), id="gzip-uppercase"),
        pytest.param(b"Content-Encoding: deflate", zlib.compress(b"hello"), id="deflate"),
        pytest.param(b"Content-Encoding: identity", b"hello", id="identity"),
        pytest.param(b"Transfer-Encoding: chunked", _chunked(b"hello"), id="chunked"),
        pytest.param(b"Transfer-Encoding: Chunked", _chunked(b"hello"), id="chunked-mixed-case"),
    ],
)
async def test_content_coding_decodable_passes_decoded(
    make_hardened: MakeHardened, head: bytes, body: bytes
) -> None:
    """One coding Turret decodes: the agent gets the decoded body, without the coding header."""
    if head.startswith(b"Transfer"):
        first = b"HTTP/1.1 200 OK\r\n" + head + b"\r\n\r\n" + body
    else:
        first = answer(body, head)
    server = ScriptServer({"/first": first})
    try:
        gw = await start_script(make_hardened, server)
        resp = await gw.request("GET", "/v1/proxy/raw/first")
        assert (resp.status, await resp.read()) == (200, b"hello")
        assert "Content-Encoding" not in resp.headers
    finally:
        await server.close()


async def test_content_coding_secret_inside_gzip_is_redacted(
    make_hardened: MakeHardened, canaries: dict[str, str]
) -> None:
    """The credential echoed inside a decodable coding is seen decoded, so it is redacted."""
    secret = canaries["gitea-token"].encode()
    server = ScriptServer(
        {"/first": answer(gzip.compress(b"k=" + secret), b"Content-Encoding: gzip")}
    )
    try:
        gw = await start_script(make_hardened, server)
        resp = await gw.request("GET", "/v1/proxy/raw/first")
        assert resp.status in {200, 502}
        assert secret not in await resp.read()
    finally:
        await server.close()


async def test_content_coding_decompression_bomb_is_refused(make_hardened: MakeHardened) -> None:
    """Attack: a small gzip body that decodes past the service's max_response_bytes."""
    bomb = gzip.compress(b"\0" * (20 * 1024 * 1024))
    server = ScriptServer({"/first": answer(bomb, b"Content-Encoding: gzip")})
    try:
        gw = await start_script(make_hardened, server)
        resp = await gw.request("GET", "/v1/proxy/raw/first")
        assert resp.status == 502
        assert "max_response_bytes" in (await error_of(resp))["message"]
    finally:
        await server.close()


async def test_content_coding_accept_encoding_names_only_decodable(
    make_hardened: MakeHardened,
) -> None:
    """Turret asks upstream only for codings it can decode, whatever the agent asked for."""
    server = ScriptServer({})
    try:
        gw = await start_script(make_hardened, server)
        resp = await gw.request(
            "GET", "/v1/proxy/raw/good", headers={"Accept-Encoding": "br, zstd, x-evil, gzip"}
        )
        assert resp.status == 200
        lines = [line.lower() for line in server.requests[-1].split(b"\r\n")]
        sent = [line for line in lines if line.startswith(b"accept-encoding:")]
        assert len(sent) == 1
        assert set(sent[0].partition(b":")[2].decode().replace(" ", "").split(",")) == set(
            ACCEPT_ENCODING.split(", ")
        )
        assert set(ACCEPT_ENCODING.split(", ")) <= {"gzip", "deflate", "br", "zstd"}
    finally:
        await server.close()
