"""Pooled upstream connections: no byte an upstream sends beyond the end of one answer ever
becomes the answer to the next request on that connection, which may be another agent's.

Every case sends one agent's request to a raw upstream that frames its answer badly, then the
other agent's request to the same upstream: that one must get its own answer ("good"), never
the attacker's "evil" bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest

from tests.adversarial.conftest import Hardened, MakeHardened, error_of, until

EVIL = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nevil!"


def answer(body: bytes, *head: bytes, status: bytes = b"200 OK") -> bytes:
    """A response with `body` and a Content-Length, plus any `head` lines."""
    lines = [b"HTTP/1.1 " + status, b"Content-Type: text/plain", *head]
    if not any(line.lower().startswith(b"content-length:") for line in head):
        lines.append(b"Content-Length: %d" % len(body))
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


GOOD = answer(b"good")


@dataclass
class ScriptServer:
    """A raw keep-alive upstream on loopback: each request path names the bytes it answers with
    (`/good` is a clean "good"); a path in `unread` is answered without reading its body.

    `later` bytes go out on the connection of the last answer once the test calls `send_later`,
    so they arrive while that connection sits idle in Turret's pool.
    """

    answers: dict[str, bytes]
    unread: frozenset[str] = frozenset()
    later: bytes = b""
    requests: list[bytes] = field(default_factory=list)
    opened: int = 0
    closed: int = 0
    port: int = 0

    async def start(self) -> None:
        """Listen on a free loopback port."""
        self._writers: list[asyncio.StreamWriter] = []
        self._last: asyncio.StreamWriter | None = None
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.opened += 1
        self._writers.append(writer)
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                self.requests.append(head)
                path = head.split(b" ")[1].decode()
                if path not in self.unread:
                    await reader.readexactly(_content_length(head))
                writer.write(GOOD if path == "/good" else self.answers[path])
                await writer.drain()
                self._last = writer
        self.closed += 1

    async def send_later(self) -> None:
        """Send the `later` bytes on the connection that carried the last answer."""
        assert self._last is not None
        self._last.write(self.later)
        await self._last.drain()

    async def close_last(self) -> None:
        """Close the connection that carried the last answer."""
        assert self._last is not None
        self._last.close()

    async def close(self) -> None:
        """Drop every connection and stop listening."""
        for writer in self._writers:
            writer.transport.abort()
        self._server.close()
        await self._server.wait_closed()


def _content_length(head: bytes) -> int:
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return int(line.split(b":")[1])
    return 0


async def start_script(
    make_hardened: MakeHardened, server: ScriptServer, methods: str = "[GET, POST, HEAD]"
) -> Hardened:
    """A hardened gateway with service `raw` on `server`, granted to both agents."""
    await server.start()
    grant = f"      - service: raw\n        methods: {methods}\n        paths: ['/*']\n"
    return await make_hardened(
        services=(
            f"  raw:\n    url: http://127.0.0.1:{server.port}\n"
            "    auth: {bearer: gitea-token}\n    timeout: 2\n"
        ),
        grants=grant,
        other_grants=grant,
    )


@pytest.fixture
async def script() -> AsyncIterator[list[ScriptServer]]:
    """Servers a test starts, closed at its end."""
    servers: list[ScriptServer] = []
    yield servers
    for server in servers:
        await server.close()


async def next_agent_gets_good(gw: Hardened) -> None:
    """The other agent's request to the same upstream reads its own answer."""
    resp = await gw.request("GET", "/v1/proxy/raw/good", headers=gw.auth(gw.other_token))
    assert (resp.status, await resp.read()) == (200, b"good")


# What the first answer is: its own, when only what follows it is bad; a 502 when aiohttp's
# parser fails on what follows before the answer was read (the connection is then broken).
BROKEN = (502, None)
SAME_SEGMENT = [
    pytest.param(answer(b"ok") + EVIL, (200, b"ok"), id="second-response-smuggled"),
    pytest.param(answer(b"ok") + b"evil!", BROKEN, id="stray-garbage"),
    pytest.param(answer(b"ok") + EVIL[:30], (200, b"ok"), id="stray-partial-head"),
    pytest.param(answer(b"ok") + EVIL[:-2], (200, b"ok"), id="smuggled-head-partial-body"),
    pytest.param(answer(EVIL, status=b"204 No Content"), (204, b""), id="204-with-body"),
    pytest.param(answer(EVIL, status=b"304 Not Modified"), (304, b""), id="304-with-body"),
    pytest.param(
        answer(b"ok" + EVIL, b"Content-Length: 2"), (200, b"ok"), id="content-length-short"
    ),
    pytest.param(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n" + EVIL,
        (200, b"ok"),
        id="chunked-then-smuggled",
    ),
    pytest.param(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\nevil!",
        BROKEN,
        id="chunked-then-garbage",
    ),
    pytest.param(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\nX-T: 1\r\n\r\n"
        + EVIL,
        (200, b"ok"),
        id="chunked-trailers-then-smuggled",
    ),
    pytest.param(answer(b"ok", b"Connection: close") + EVIL, BROKEN, id="connection-close-ignored"),
]


@pytest.mark.parametrize(("first", "expected"), SAME_SEGMENT)
async def test_desync_bytes_after_answer_never_reach_next_agent(
    make_hardened: MakeHardened,
    script: list[ScriptServer],
    first: bytes,
    expected: tuple[int, bytes | None],
) -> None:
    """Attack: an upstream writes more than its answer in one go (a smuggled second response,
    garbage, a body on a bodiless status, a short Content-Length, bytes after the last chunk)."""
    server = ScriptServer({"/first": first})
    script.append(server)
    gw = await start_script(make_hardened, server)
    resp = await gw.request("GET", "/v1/proxy/raw/first")
    body = await resp.read()
    assert (resp.status, body if expected[1] is not None else None) == expected
    assert b"evil" not in body
    await next_agent_gets_good(gw)
    await until(lambda: server.closed >= 1)  # the faulty connection was dropped, not pooled


@pytest.mark.parametrize(
    ("body", "status"),
    [
        pytest.param(b"HTTP/1.1 204 No Content\r\nX-Evil: 1\r\n\r\n", 200, id="bodiless"),
        pytest.param(EVIL, 502, id="with-body"),
    ],
)
async def test_desync_head_answer_with_body(
    make_hardened: MakeHardened, script: list[ScriptServer], body: bytes, status: int
) -> None:
    """Attack: a HEAD answer carries a body shaped as a second response (one that has no body
    of its own, so it parses as the next answer; or one that has, so the parser fails)."""
    server = ScriptServer({"/first": answer(b"", b"Content-Length: 5") + body})
    script.append(server)
    gw = await start_script(make_hardened, server)
    resp = await gw.request("HEAD", "/v1/proxy/raw/first")
    assert resp.status == status
    await next_agent_gets_good(gw)
    await until(lambda: server.closed >= 1)


@pytest.mark.parametrize(
    "later",
    [
        pytest.param(EVIL, id="second-response"),
        pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", id="head-only"),
        pytest.param(b"evil!", id="garbage"),
        pytest.param(b"\r\n", id="blank-line"),
    ],
)
async def test_desync_bytes_arriving_on_idle_pooled_connection(
    make_hardened: MakeHardened, script: list[ScriptServer], later: bytes
) -> None:
    """Attack: the upstream waits until its connection is idle in the pool, then sends an
    answer no request asked for, for the next request that reuses the connection to read."""
    server = ScriptServer({"/first": answer(b"ok")}, later=later)
    script.append(server)
    gw = await start_script(make_hardened, server)
    resp = await gw.request("GET", "/v1/proxy/raw/first")
    assert (resp.status, await resp.read()) == (200, b"ok")
    await server.send_later()  # in Turret's socket buffer once this returns (same event loop)
    await next_agent_gets_good(gw)
    await until(lambda: server.closed >= 1)  # Turret dropped the connection on seeing them
    assert server.opened == 2


async def test_desync_unread_request_body_answered_as_request(
    make_hardened: MakeHardened, script: list[ScriptServer]
) -> None:
    """Attack: an agent's POST body holds a request; the upstream answers without reading the
    body, then answers the body as a request of its own (request smuggling through an upstream
    that ignores bodies): that answer must not reach the next agent."""
    server = ScriptServer(
        {"/first": answer(b"ok"), "/smuggled": EVIL}, unread=frozenset({"/first"})
    )
    script.append(server)
    gw = await start_script(make_hardened, server)
    resp = await gw.request(
        "POST", "/v1/proxy/raw/first", data=b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    assert (resp.status, await resp.read()) == (200, b"ok")
    await until(lambda: len(server.requests) == 2)  # the upstream answered the smuggled one
    await until(lambda: server.closed >= 1)
    await next_agent_gets_good(gw)


async def test_desync_truncated_answer_is_502_and_next_is_clean(
    make_hardened: MakeHardened, script: list[ScriptServer]
) -> None:
    """Attack (fault): a Content-Length longer than the body, the connection then closed."""
    server = ScriptServer({"/first": answer(b"ok", b"Content-Length: 50")})
    script.append(server)
    gw = await start_script(make_hardened, server)
    task = asyncio.ensure_future(gw.request("GET", "/v1/proxy/raw/first"))
    await until(lambda: len(server.requests) == 1)
    await server.close_last()
    resp = await task
    assert resp.status == 502
    assert (await error_of(resp))["code"] == "upstream_error"
    await next_agent_gets_good(gw)


@pytest.mark.parametrize(
    "status",
    [
        pytest.param(b"101 Switching Protocols\r\nUpgrade: evil\r\nConnection: upgrade", id="101"),
        pytest.param(b"102 Processing", id="102-then-200"),
        pytest.param(b"150 Odd", id="150-then-200"),
        pytest.param(b"199 Odd", id="199-then-200"),
        pytest.param(b"600 Odd", id="600"),
        pytest.param(b"999 Odd", id="999"),
        pytest.param(b"099 Odd", id="099"),
        pytest.param(b"000 Odd", id="000"),
    ],
)
async def test_desync_unexpected_status_is_502(
    make_hardened: MakeHardened, script: list[ScriptServer], status: bytes
) -> None:
    """Attack: a status Turret never asked for (an upgrade, an odd interim answer, a code
    outside 1xx-5xx) with a second response behind it: a 502 quoting none of it."""
    first = b"HTTP/1.1 " + status + b"\r\n\r\n" + answer(b"evil!")
    server = ScriptServer({"/first": first})
    script.append(server)
    gw = await start_script(make_hardened, server)
    resp = await gw.request("GET", "/v1/proxy/raw/first")
    assert resp.status == 502
    assert b"evil" not in await resp.read()
    assert gw.audit()[-1]["TURRET_STATUS"] == "502"
    await next_agent_gets_good(gw)
    await until(lambda: server.closed >= 1)


@pytest.mark.parametrize("status", [b"100 Continue", b"103 Early Hints\r\nLink: </a>; rel=preload"])
async def test_desync_expected_interim_answers_pass(
    make_hardened: MakeHardened, script: list[ScriptServer], status: bytes
) -> None:
    """100 and 103 are interim answers aiohttp reads past: the final answer is returned."""
    server = ScriptServer({"/first": b"HTTP/1.1 " + status + b"\r\n\r\n" + answer(b"ok")})
    script.append(server)
    gw = await start_script(make_hardened, server)
    resp = await gw.request("GET", "/v1/proxy/raw/first")
    assert (resp.status, await resp.read()) == (200, b"ok")
    await next_agent_gets_good(gw)


async def test_desync_clean_answers_reuse_the_connection(
    make_hardened: MakeHardened, script: list[ScriptServer]
) -> None:
    """The clean path keeps its keep-alive connection: the guard costs no reconnects."""
    server = ScriptServer(
        {
            "/first": answer(b"ok"),
            "/head": answer(b"", b"Content-Length: 2"),
            "/chunked": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"2\r\nok\r\n0\r\nX-Trailer: 1\r\n\r\n",
        }
    )
    script.append(server)
    gw = await start_script(make_hardened, server)
    for path in ("/first", "/chunked", "/first"):
        resp = await gw.request("GET", f"/v1/proxy/raw{path}")
        assert (resp.status, await resp.read()) == (200, b"ok")
    head = await gw.request("HEAD", "/v1/proxy/raw/head")
    assert head.status == 200
    await next_agent_gets_good(gw)
    assert server.opened == 1
