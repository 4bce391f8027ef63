"""Shared fixtures: the canaries and the leak check, a recording fake upstream, and a gateway.

Every gateway is built by `tests.gateway.build_gateway` inside the `leak_check` fixture: when the
test ends, no canary credential or agent token, in any encoding the echo guard knows, may appear
in a response, an audit record or a log line.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientResponse, web
from aiohttp.test_utils import TestServer
from hypothesis import settings

from tests.gateway import Built, Canaries, build_gateway, fields_of
from turret.audit import Auditor
from turret.auth import token_sha256

# CI runs the property tests on a fixed sequence of examples, so a submission that passed here
# does not fail there on an example never drawn before; locally each run explores new ones.
settings.register_profile("ci", derandomize=True)
if os.environ.get("CI"):
    settings.load_profile("ci")


@pytest.fixture(scope="session")
def canary_set() -> Canaries:
    """The one set of secrets every leak check looks for: credential canaries for this run
    (random, and easy to spot), plus each test's agent tokens and issued values."""
    return Canaries.random()


@pytest.fixture
def canaries(canary_set: Canaries) -> dict[str, str]:
    """Credential name -> canary value."""
    return canary_set.credentials


@pytest.fixture
def creds_dir(tmp_path: Path, canary_set: Canaries) -> Path:
    """A directory laid out as systemd's $CREDENTIALS_DIRECTORY, holding the canaries."""
    return canary_set.write(tmp_path / "credentials")


@pytest.fixture
async def leak_check(
    canary_set: Canaries, caplog: pytest.LogCaptureFixture
) -> AsyncIterator[Canaries]:
    """The canaries, for building gateways: when the test ends, every gateway built is closed
    and no canary or agent token may be in its responses, audit records or log lines."""
    caplog.set_level(logging.DEBUG)
    canary_set.begin_test()
    yield canary_set
    await canary_set.close_and_check(caplog.text)


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
class Gateway(Built):
    """Turret in front of the fake upstream, with the two agents' tokens."""

    upstream: Upstream
    token: str
    other_token: str

    def auth(self, token: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {token or self.token}"}

    async def request(self, method: str, raw_target: str, **kwargs: Any) -> ClientResponse:
        headers = {**self.auth(), **kwargs.pop("headers", {})}
        return await self.client.session.request(
            method, self.url(raw_target), headers=headers, allow_redirects=False, **kwargs
        )


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


async def make_gateway(
    upstream: Upstream,
    *,
    creds: Canaries,
    tmp_path: Path,
    extra: str = "",
    audit_path: Path | None = None,
    auditor: Auditor | None = None,
) -> Gateway:
    """A gateway over `config_text` (built inside the `leak_check` fixture, which checks it)."""
    token, other = creds.mint(), creds.mint()
    built = await build_gateway(
        config_text(upstream.url, token, other, extra),
        creds=creds,
        audit_path=audit_path or tmp_path / "audit.jsonl",
        credentials_dir=creds.write(tmp_path / "credentials"),
        auditor=auditor,
    )
    return Gateway(**fields_of(built), upstream=upstream, token=token, other_token=other)


@pytest.fixture
async def gateway(upstream: Upstream, leak_check: Canaries, tmp_path: Path) -> Gateway:
    """A Turret app on loopback in front of the fake upstream, checked for leaks afterwards."""
    return await make_gateway(upstream, creds=leak_check, tmp_path=tmp_path)


@pytest.fixture
def no_leaks_in(canary_set: Canaries) -> Callable[[str], None]:
    """A checker for text produced outside a gateway (CLI output, files)."""

    def check(text: str) -> None:
        canary_set.assert_absent([("text", text)])

    return check
