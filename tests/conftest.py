"""Shared fixtures: canary credentials, a recording fake upstream, and a Turret gateway.

Every gateway built here records each response it sends and its audit trail; when the test ends
the fixture checks that no canary credential, in any encoding the echo guard knows, appears in a
response, an audit record or a log line.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientResponse, web
from aiohttp.test_utils import TestClient, TestServer
from yarl import URL

from turret.audit import Auditor, LineSink
from turret.auth import new_token, token_sha256
from turret.config import load_config
from turret.echo import encodings
from turret.runtime import RuntimeHolder, build_runtime
from turret.web.app import create_app

CANARY_NAMES = ("gitea-token", "basic-password", "api-key", "query-key", "bot-token")


@pytest.fixture(scope="session")
def canaries() -> dict[str, str]:
    """Credential values for this run: random, and easy to spot if they ever leak."""
    return {name: f"CANARY-{name}-{secrets.token_hex(12)}" for name in CANARY_NAMES}


@pytest.fixture
def creds_dir(tmp_path: Path, canaries: dict[str, str]) -> Path:
    """A directory laid out as systemd's $CREDENTIALS_DIRECTORY, holding the canaries."""
    d = tmp_path / "credentials"
    d.mkdir()
    for name, value in canaries.items():
        (d / name).write_text(value + "\n")
    return d


# --- the fake upstream -------------------------------------------------------------------------


@dataclass
class Received:
    method: str
    raw_path: str
    headers: dict[str, str]
    header_items: list[tuple[str, str]]
    body: bytes


@dataclass
class Upstream:
    """A real aiohttp server on loopback that records every request it gets."""

    server: TestServer
    received: list[Received] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    on_request: Callable[[], None] = lambda: None  # runs as each request arrives

    @property
    def url(self) -> str:
        return str(self.server.make_url("")).rstrip("/")


def upstream_app(up: list[Upstream]) -> web.Application:
    """Behaviour by path: see the handlers below."""

    async def handler(request: web.Request) -> web.StreamResponse:
        upstream = up[0]
        upstream.on_request()
        body = await request.read()
        upstream.received.append(
            Received(
                request.method,
                request.raw_path,
                dict(request.headers),
                list(request.headers.items()),
                body,
            )
        )
        parts = request.path.removeprefix("/base").strip("/").split("/")
        special = SPECIAL.get(parts[0])
        if special is not None:
            return await special(request, parts, upstream)
        return web.json_response(
            {
                "method": request.method,
                "raw_path": request.raw_path,
                "headers": dict(request.headers),
                "body": body.decode("utf-8", "replace"),
            }
        )

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    return app


async def _status(request: web.Request, parts: list[str], _: Upstream) -> web.StreamResponse:
    code = int(parts[1])
    headers = {"Location": request.query["location"]} if "location" in request.query else {}
    return web.Response(status=code, headers=headers, text="status")


async def _big(request: web.Request, parts: list[str], _: Upstream) -> web.StreamResponse:
    return web.Response(body=b"x" * int(parts[1]))


async def _chunked(request: web.Request, parts: list[str], _: Upstream) -> web.StreamResponse:
    resp = web.StreamResponse()
    resp.enable_chunked_encoding()
    await resp.prepare(request)
    remaining = int(parts[1])
    while remaining > 0:
        n = min(remaining, 16384)
        await resp.write(b"y" * n)
        remaining -= n
    await resp.write_eof()
    return resp


async def _gzip(request: web.Request, parts: list[str], _: Upstream) -> web.StreamResponse:
    payload = gzip.compress(b"\0" * int(parts[1]))
    return web.Response(body=payload, headers={"Content-Encoding": "gzip"})


async def _hang(request: web.Request, parts: list[str], upstream: Upstream) -> web.StreamResponse:
    await upstream.release.wait()  # until the test releases it, or the client goes away
    return web.Response(text="late")


async def _headers(request: web.Request, parts: list[str], _: Upstream) -> web.StreamResponse:
    resp = web.Response(text="with headers")
    resp.headers.add("Set-Cookie", "session=abc; HttpOnly")
    resp.headers.add("WWW-Authenticate", 'Basic realm="x"')
    resp.headers.add("Proxy-Authenticate", "Basic")
    resp.headers.add("X-Custom", "kept")
    resp.headers.add("Keep-Alive", "timeout=5")
    return resp


async def _reflect(request: web.Request, parts: list[str], _: Upstream) -> web.StreamResponse:
    """Reflect the Authorization header, in a header, the body, and a redirect."""
    auth = request.headers.get("Authorization", "")
    token = auth.partition(" ")[2]
    return web.Response(
        status=302,
        headers={"X-Echo": auth, "Location": f"https://user:pw@example.test/cb?t={token}"},
        text=json.dumps({"auth": auth, "query": request.query_string}),
    )


SPECIAL: dict[str, Callable[[web.Request, list[str], Upstream], Awaitable[web.StreamResponse]]] = {
    "status": _status,
    "big": _big,
    "chunked": _chunked,
    "gzip": _gzip,
    "hang": _hang,
    "headers": _headers,
    "reflect": _reflect,
}


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    holder: list[Upstream] = []
    server = TestServer(upstream_app(holder), host="127.0.0.1")
    await server.start_server()
    up = Upstream(server)
    holder.append(up)
    yield up
    up.release.set()
    await server.close()


# --- the gateway -------------------------------------------------------------------------------


def upstream_services(upstream_url: str) -> str:
    """The services every gateway config here has on the fake upstream: `gitea` (bearer, with
    tight limits), `apikey` (an injected header) and `q` (an injected query parameter)."""
    return f"""\
  gitea:
    url: {upstream_url}
    auth: {{bearer: gitea-token}}
    timeout: 2
    max_request_bytes: 1024
    max_response_bytes: 65536
  apikey:
    url: {upstream_url}
    auth: {{header: {{name: X-Api-Key, value: api-key}}}}
  q:
    url: {upstream_url}
    auth: {{query: {{name: api_key, value: query-key}}}}
"""


def config_text(upstream_url: str, token: str, other_token: str, extra: str = "") -> str:
    """The test configuration: four services (one per auth kind) on the fake upstream."""
    return f"""
services:
{upstream_services(upstream_url)}\
  basic:
    url: {upstream_url}/base
    auth: {{basic: {{username: bot, password: {{credential: basic-password}}}}}}
agents:
  opencode:
    token_sha256: {token_sha256(token)}
    proxy:
      - service: gitea
        methods: [GET, POST, PUT, DELETE]
        paths: ["/api/v1/repos/me/*", "/api/v1/user", "/api/v1/repos/me/*/issues/**",
                "/status/*", "/big/*", "/chunked/*", "/gzip/*", "/hang", "/headers", "/reflect",
                "/echo/**", "/"]
      - service: basic
        methods: [GET]
        paths: ["/**"]
      - service: apikey
        methods: [GET]
        paths: ["/reflect", "/echo/**"]
      - service: q
        methods: [GET]
        paths: ["/reflect", "/echo/**"]
  other:
    token_sha256: {token_sha256(other_token)}
    proxy:
      - service: gitea
        methods: [GET]
        paths: ["/api/v1/user"]
{extra}"""


@dataclass
class Gateway:
    client: TestClient[web.Request, web.Application]
    upstream: Upstream
    token: str
    other_token: str
    audit_path: Path
    canaries: dict[str, str]
    responses: list[bytes] = field(default_factory=list)

    def auth(self, token: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {token or self.token}"}

    def url(self, raw_target: str) -> URL:
        """An absolute URL whose path is sent exactly as written (no normalisation)."""
        return URL(str(self.client.make_url("")).rstrip("/") + raw_target, encoded=True)

    async def request(self, method: str, raw_target: str, **kwargs: Any) -> ClientResponse:
        headers = {**self.auth(), **kwargs.pop("headers", {})}
        return await self.client.session.request(
            method, self.url(raw_target), headers=headers, allow_redirects=False, **kwargs
        )

    def audit(self) -> list[dict[str, str]]:
        text = self.audit_path.read_text() if self.audit_path.is_file() else ""
        return [json.loads(line) for line in text.splitlines()]

    def forbidden_forms(self) -> set[bytes]:
        forms: set[bytes] = set()
        for value in self.canaries.values():
            forms |= encodings(value.encode())
        return forms

    def assert_no_leaks(self, log_text: str) -> None:
        """No canary, in any encoding, in responses, audit records or logs."""
        assert_absent(self.forbidden_forms(), self.audit_path, log_text, self.responses)


def assert_absent(
    forms: set[bytes], audit_path: Path, log_text: str, responses: list[bytes]
) -> None:
    """None of `forms` in the audit file, the log text or any recorded response."""
    audit = audit_path.read_bytes() if audit_path.is_file() else b""
    places = [("audit", audit), ("log", log_text.encode()), *(("response", r) for r in responses)]
    for where, data in places:
        for form in forms:
            assert form not in data, f"secret leaked into {where}: {data[:300]!r}"


async def assert_error(resp: ClientResponse, status: int, code: str) -> None:
    """`resp` is the one JSON error shape, with this status and code and its request id."""
    assert resp.status == status
    assert resp.content_type == "application/json"
    payload = await resp.json()
    assert payload.keys() == {"ok", "error"} and payload["ok"] is False
    assert payload["error"].keys() == {"code", "message", "request_id"}
    assert payload["error"]["code"] == code
    assert payload["error"]["message"]
    assert payload["error"]["request_id"] == resp.headers["X-Request-Id"]


def record_responses(app: web.Application) -> list[bytes]:
    """Record the head and body of every response `app` sends, for the leak check."""
    recorded: list[bytes] = []

    async def record(_: web.Request, response: web.StreamResponse) -> None:
        head = "".join(f"{k}: {v}\n" for k, v in response.headers.items()).encode()
        body = response.body if isinstance(response, web.Response) else b""
        recorded.append(head + (body if isinstance(body, bytes) else b""))

    app.on_response_prepare.append(record)
    return recorded


async def make_gateway(
    upstream: Upstream,
    *,
    creds_dir: Path,
    canaries: dict[str, str],
    tmp_path: Path,
    extra: str = "",
    audit_path: Path | None = None,
    auditor: Auditor | None = None,
) -> Gateway:
    token, other = new_token(), new_token()
    config = load_config(config_text(upstream.url, token, other, extra))
    runtime = build_runtime(config, str(creds_dir))
    audit_path = audit_path or tmp_path / "audit.jsonl"
    auditor = auditor or Auditor(LineSink.open(str(audit_path)))
    app = create_app(RuntimeHolder(runtime), auditor)
    recorded = record_responses(app)
    client = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    return Gateway(client, upstream, token, other, audit_path, canaries, recorded)


@pytest.fixture
async def gateway(
    upstream: Upstream,
    creds_dir: Path,
    canaries: dict[str, str],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> AsyncIterator[Gateway]:
    """A Turret app on loopback in front of the fake upstream, checked for leaks afterwards."""
    caplog.set_level(logging.DEBUG)
    gw = await make_gateway(upstream, creds_dir=creds_dir, canaries=canaries, tmp_path=tmp_path)
    yield gw
    await gw.client.close()
    gw.assert_no_leaks(caplog.text)


@pytest.fixture
def no_leaks_in(canaries: dict[str, str]) -> Iterator[Callable[[str], None]]:
    """A checker for text produced outside a gateway (CLI output, files)."""

    def check(text: str) -> None:
        for value in canaries.values():
            for form in encodings(value.encode()):
                assert form.decode("latin-1") not in text

    yield check
