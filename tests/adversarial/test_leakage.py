"""Credential leakage: an upstream echoing the credential back, and an agent sending secrets out."""

from __future__ import annotations

import asyncio
import base64
import binascii
import gzip
import json
from collections.abc import AsyncIterator
from urllib.parse import quote

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from tests.adversarial.conftest import Hardened, MakeHardened, error_of, until


async def _mirror(request: web.Request) -> web.StreamResponse:
    """Echo the Authorization header back in the encoding the path names."""
    auth = request.headers.get("Authorization", "").encode()
    how = request.match_info["how"]
    if how == "hex":
        return web.Response(body=b"debug: " + binascii.hexlify(auth))
    if how == "b64-embedded":
        return web.Response(body=base64.b64encode(b"request was: " + auth + b" (end)"))
    if how == "urlencoded":
        return web.Response(text=json.dumps({"next": "/cb?h=" + quote(auth.decode(), safe="")}))
    if how == "gzip":
        return web.Response(body=gzip.compress(auth), headers={"Content-Encoding": "gzip"})
    if how == "header-name":
        token = auth.decode().partition(" ")[2]
        return web.Response(text="ok", headers={f"X-{token}": "1"})
    if how == "cookie":
        return web.Response(text="ok", headers={"Set-Cookie": f"s={auth.decode()}"})
    if how == "error-page":
        return web.Response(status=500, text=f"<pre>Traceback: header was {auth.decode()}</pre>")
    return web.Response(status=401, headers={"WWW-Authenticate": f'Bearer error="{auth.decode()}"'})


@pytest.fixture
async def mirror_gateway(make_hardened: MakeHardened) -> AsyncIterator[Hardened]:
    app = web.Application()
    app.router.add_get("/{how}", _mirror)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    url = str(server.make_url("")).rstrip("/")
    yield await make_hardened(
        services=f"  mirror:\n    url: {url}\n    auth: {{bearer: gitea-token}}\n",
        grants="      - service: mirror\n        methods: [GET]\n        paths: ['/*']\n",
    )
    await server.close()


@pytest.mark.parametrize(
    "how",
    ["hex", "b64-embedded", "urlencoded", "gzip", "header-name", "cookie", "error-page", "www"],
)
async def test_leak_upstream_echo_is_redacted(mirror_gateway: Hardened, how: str) -> None:
    """Attack: an upstream (or a hostile page on it) reflects the injected credential back in
    some encoding, a header name, a cookie, an error page or a challenge."""
    resp = await mirror_gateway.request("GET", f"/v1/proxy/mirror/{how}")
    await resp.read()
    # The gateway fixture checks every canary form is absent from what the agent received.
    assert resp.status in (200, 401, 500)


async def _post(gw: Hardened, target: str, **kwargs: object) -> dict[str, str]:
    resp = await gw.request("POST", target, **kwargs)
    assert resp.status == 403
    return await error_of(resp)


def _exfil_cases(
    gw: Hardened, canaries: dict[str, str]
) -> dict[str, tuple[str, dict[str, object]]]:
    token = gw.token
    issue = "/v1/proxy/gitea/api/v1/repos/me/x/issues"
    return {
        "own-token-in-body": (issue, {"data": json.dumps({"body": token}).encode()}),
        "own-token-base64-in-body": (issue, {"data": base64.b64encode(token.encode())}),
        "own-token-hex-in-query": (issue + "?note=" + token.encode().hex(), {}),
        "own-token-fully-percent-encoded-query": (
            issue + "?note=" + "".join(f"%{b:02x}" for b in token.encode()),
            {},
        ),
        "own-token-in-header": (issue, {"headers": {"X-Note": f"fyi {token}"}}),
        "own-token-in-path": (issue + "/" + token, {}),
        "own-token-gzip-body": (
            issue,
            {"data": gzip.compress(token.encode()), "headers": {"Content-Encoding": "gzip"}},
        ),
        "loaded-agent-token-in-body": (issue, {"data": canaries["bot-token"].encode()}),
        "service-credential-in-body": (issue, {"data": b"key=" + canaries["api-key"].encode()}),
    }


@pytest.mark.parametrize(
    "case",
    [
        "own-token-in-body",
        "own-token-base64-in-body",
        "own-token-hex-in-query",
        "own-token-fully-percent-encoded-query",
        "own-token-in-header",
        "own-token-in-path",
        "own-token-gzip-body",
        "loaded-agent-token-in-body",
        "service-credential-in-body",
    ],
)
async def test_leak_exfiltration_of_secrets_is_refused(
    hardened: Hardened, canaries: dict[str, str], case: str
) -> None:
    """Attack: a prompt-injected agent posts a secret (its own token, a loaded credential) to
    an allowed upstream, raw or encoded, in the body, query, a header or the path."""
    target, kwargs = _exfil_cases(hardened, canaries)[case]
    error = await _post(hardened, target, **kwargs)
    assert error["code"] == "credential_in_request"
    assert hardened.upstream.received == []
    outcome = hardened.audit()[-1]
    assert outcome["TURRET_STATUS"] == "403"
    assert outcome["TURRET_REASON"].startswith("exfiltration guard")


async def test_leak_other_agents_seen_token_is_refused(hardened: Hardened) -> None:
    """Attack: agent A learned agent B's token and tries to post it out through A's grants."""
    resp = await hardened.request(
        "GET", "/v1/proxy/gitea/api/v1/user", headers=hardened.auth(hardened.other_token)
    )
    assert resp.status == 200
    error = await _post(
        hardened, "/v1/proxy/gitea/api/v1/repos/me/x/issues", data=hardened.other_token.encode()
    )
    assert error["code"] == "credential_in_request"
    assert len(hardened.upstream.received) == 1


async def test_leak_ordinary_body_is_forwarded(hardened: Hardened) -> None:
    """Control: a body without secrets passes the exfiltration guard unchanged."""
    resp = await hardened.request(
        "POST", "/v1/proxy/gitea/api/v1/repos/me/x/issues", data=b'{"title": "turret_ hi"}'
    )
    assert resp.status == 200
    assert hardened.upstream.received[0].body == b'{"title": "turret_ hi"}'


@pytest.mark.parametrize(
    ("location", "expected"),
    [
        pytest.param(
            "https://admin:hunter2@example.test/x", "https://example.test/x", id="user-password"
        ),
        pytest.param("https://deploy-key@example.test/x", "https://example.test/x", id="user"),
        pytest.param("/relative/path?a=b", "/relative/path?a=b", id="relative-kept"),
    ],
)
async def test_leak_redirect_userinfo_is_stripped(
    hardened: Hardened, location: str, expected: str
) -> None:
    """Attack: an upstream redirect whose Location carries `user:password@` of another system
    (not a credential Turret holds); it must not reach the agent."""
    resp = await hardened.request(
        "GET", "/v1/proxy/gitea/status/302?location=" + quote(location, safe="")
    )
    assert resp.status == 302
    assert resp.headers["Location"] == expected


def _server_headers(data: bytes) -> list[bytes]:
    head = data.partition(b"\r\n\r\n")[0].lower()
    return [line for line in head.split(b"\r\n") if line.startswith(b"server:")]


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET /v1/whoami HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer TOKEN\r\n",  # 200
        b"GET /v1/whoami HTTP/1.1\r\nHost: t\r\n",  # 401
        b"GET /v1/nothing HTTP/1.1\r\nHost: t\r\n",  # 404, before any handler
        b"DELETE /v1/whoami HTTP/1.1\r\nHost: t\r\n",  # 405
        b"GET /v1/whoami HTTP/1.0\r\n",  # HTTP/1.0
        b"GET /v1/whoami HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\nContent-Length: 2\r\n",
        b"GET /v1/whoami HTTP/1.1\r\nHost: t\r\nBad Header: x\r\n",  # parser-level 400
        b"GET /v1/whoami HTTP/9.9\r\nHost: t\r\n",
    ],
)
async def test_leak_no_version_banner(hardened: Hardened, request_bytes: bytes) -> None:
    """Attack: read aiohttp's and Python's versions off the `Server` header, to pick exploits;
    every answer, the HTTP parser's own refusals included, names no version."""
    data, _ = await hardened.raw(
        request_bytes.replace(b"TOKEN", hardened.token.encode()) + b"Connection: close\r\n\r\n"
    )
    assert data.startswith(b"HTTP/1."), data[:100]
    assert _server_headers(data) == [b"server: turret"], data[:400]
    assert b"aiohttp" not in data.lower() and b"python" not in data.lower()


async def test_leak_no_version_banner_on_the_connection_cap(make_hardened: MakeHardened) -> None:
    gw = await make_hardened(max_connections=1)
    held = await asyncio.open_connection("127.0.0.1", gw.port)
    runner = gw.client.server.runner
    assert runner is not None and runner.server is not None
    server = runner.server
    await until(lambda: len(server.connections) == 1)
    data, closed = await gw.raw(b"GET /v1/whoami HTTP/1.1\r\nHost: t\r\n\r\n")
    held[1].close()
    assert data.startswith(b"HTTP/1.1 503") and closed
    assert _server_headers(data) == [] and b"aiohttp" not in data.lower()
