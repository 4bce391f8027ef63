"""The guarded proxy end to end: a real Turret app in front of a real fake upstream."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator

import pytest

from tests.conftest import Gateway


async def test_proxy_forwards_with_bearer_injected(
    gateway: Gateway, canaries: dict[str, str]
) -> None:
    resp = await gateway.request("GET", "/v1/proxy/gitea/api/v1/user?page=2&x=%20y")
    assert resp.status == 200
    body = await resp.json()
    assert body["raw_path"] == "/api/v1/user?page=2&x=%20y"
    (got,) = gateway.upstream.received
    assert got.headers["Authorization"] == f"Bearer {canaries['gitea-token']}"
    assert [k for k, _ in got.header_items if k.lower() == "authorization"] == ["Authorization"]
    assert resp.headers["X-Request-Id"]


async def test_proxy_post_body_reaches_upstream(gateway: Gateway) -> None:
    resp = await gateway.request(
        "POST",
        "/v1/proxy/gitea/api/v1/repos/me/x/issues",
        data=b'{"title": "t"}',
        headers={"Content-Type": "application/json"},
    )
    assert resp.status == 200
    (got,) = gateway.upstream.received
    assert got.body == b'{"title": "t"}'
    assert got.headers["Content-Type"] == "application/json"


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": "Basic Zm9vOmJhcg=="},
        {"Authorization": "Bearer"},
        {"Authorization": "bearer  "},
    ],
)
async def test_proxy_unauthenticated_is_401_without_upstream_call(
    gateway: Gateway, headers: dict[str, str]
) -> None:
    resp = await gateway.client.session.get(
        gateway.url("/v1/proxy/gitea/api/v1/user"), headers=headers
    )
    assert resp.status == 401
    assert (await resp.json())["error"]["code"] == "unauthorized"
    assert gateway.upstream.received == []
    (record,) = gateway.audit()
    assert record["TURRET_DECISION"] == "deny" and record["TURRET_STATUS"] == "401"
    assert "TURRET_AGENT" not in record


@pytest.mark.parametrize(
    ("method", "target"),
    [
        ("PATCH", "/v1/proxy/gitea/api/v1/user"),  # method not granted
        ("GET", "/v1/proxy/gitea/api/v1/admin/users"),  # path not granted
        ("GET", "/v1/proxy/gitea/api/v1/repos/me/x/pulls"),  # `*` is one segment only
        ("GET", "/v1/proxy/gitea/api/v1/repos/other/x"),
        ("GET", "/v1/proxy/nope/api/v1/user"),  # unknown service
        ("POST", "/v1/proxy/basic/anything"),
    ],
)
async def test_proxy_denies_what_no_grant_allows(
    gateway: Gateway, method: str, target: str
) -> None:
    resp = await gateway.request(method, target)
    assert resp.status == 403
    assert (await resp.json())["error"]["code"] == "forbidden"
    assert gateway.upstream.received == []
    (record,) = gateway.audit()
    assert record["TURRET_DECISION"] == "deny" and record["TURRET_AGENT"] == "opencode"


async def test_proxy_grants_are_per_agent(gateway: Gateway) -> None:
    ok = await gateway.request(
        "GET", "/v1/proxy/gitea/api/v1/user", headers=gateway.auth(gateway.other_token)
    )
    denied = await gateway.request(
        "GET", "/v1/proxy/gitea/api/v1/repos/me/x", headers=gateway.auth(gateway.other_token)
    )
    assert (ok.status, denied.status) == (200, 403)


async def test_proxy_double_star_matches_any_depth(gateway: Gateway) -> None:
    for target in ("/api/v1/repos/me/r/issues", "/api/v1/repos/me/r/issues/1/comments/2"):
        resp = await gateway.request("GET", "/v1/proxy/gitea" + target)
        assert resp.status == 200, target


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/repos/me/../../admin",
        "/api/v1/./user",
        "/api/v1/repos/me/%2e%2e/x",
        "/api/v1/repos/me/%2E/x",
        "/api/v1/repos/me/.%2e/x",
        "/api/v1/repos/me/%252e%252e/x",
        "/api/v1/repos/me/%25252e%25252e/x",
        "/api/v1/repos/me/..;/x",
        "/api/v1/repos/me/%2e%2e%3b/x",
        "/api/v1//user",
        "/api/v1/user/",
        "/api/v1/repos/me/a%2fb",
        "/api/v1/repos/me/a%2Fb",
        "/api/v1/repos/me/a%252fb",
        "/api/v1/repos/me/a%5cb",
        "/api/v1/repos/me/a%00b",
        "/api/v1/repos/me/a%0d%0ab",
        "/api/v1/repos/me/a%7fb",
        "/api/v1/repos/me/a%zzb",
        "/api/v1/repos/me/a%",
        "/api/v1/repos/me/%ff%fe",
        "/api/v1/repos/me/a\\b",
        "/api/v1/repos/me/%252e%ef%bc%8e/x",  # fullwidth dot hidden one decoding deeper
    ],
)
async def test_proxy_rejects_ambiguous_paths(gateway: Gateway, path: str) -> None:
    resp = await gateway.request("GET", "/v1/proxy/gitea" + path)
    assert resp.status == 400
    assert (await resp.json())["error"]["code"] == "bad_request"
    assert gateway.upstream.received == []
    (record,) = gateway.audit()
    assert record["TURRET_DECISION"] == "deny" and record["TURRET_STATUS"] == "400"


@pytest.mark.parametrize(
    ("sent", "upstream_path"),
    [
        ("/api/v1/repos/me/%61bc", "/api/v1/repos/me/abc"),
        ("/api/v1/repos/me/a%3Bb", "/api/v1/repos/me/a%3Bb"),
        ("/api/v1/repos/me/a;b", "/api/v1/repos/me/a%3Bb"),
        ("/api/v1/repos/me/a+b", "/api/v1/repos/me/a%2Bb"),
        ("/api/v1/repos/me/caf%c3%a9", "/api/v1/repos/me/caf%C3%A9"),
        ("/api/v1/repos/me/100%25", "/api/v1/repos/me/100%25"),
    ],
)
async def test_proxy_sends_exactly_the_canonical_path(
    gateway: Gateway, sent: str, upstream_path: str
) -> None:
    resp = await gateway.request("GET", "/v1/proxy/gitea" + sent)
    assert resp.status == 200
    assert gateway.upstream.received[0].raw_path == upstream_path
    assert gateway.audit()[0]["TURRET_PATH"] == upstream_path


async def test_proxy_strips_caller_controlled_headers(
    gateway: Gateway, canaries: dict[str, str]
) -> None:
    resp = await gateway.request(
        "GET",
        "/v1/proxy/gitea/api/v1/user",
        headers={
            "Cookie": "sid=stolen",
            "Proxy-Authorization": "Basic eA==",
            "Proxy-Foo": "1",
            "Host": "evil.example",
            "Forwarded": "for=1.2.3.4",
            "X-Forwarded-For": "1.2.3.4",
            "X-Forwarded-Host": "evil.example",
            "Connection": "keep-alive, X-Hop",
            "X-Hop": "1",
            "Keep-Alive": "timeout=1",
            "TE": "trailers",
            "Upgrade": "websocket",
            "X-Real-IP": "1.2.3.4",
            "Accept-Encoding": "zstd",
            "X-Kept": "yes",
        },
    )
    assert resp.status == 200
    (got,) = gateway.upstream.received
    lower = {k.lower() for k, _ in got.header_items}
    for name in (
        "cookie",
        "proxy-authorization",
        "proxy-foo",
        "forwarded",
        "x-forwarded-for",
        "x-forwarded-host",
        "x-hop",
        "keep-alive",
        "te",
        "upgrade",
        "x-real-ip",
    ):
        assert name not in lower, name
    assert got.headers["Host"] == gateway.upstream.url.removeprefix("http://")
    assert got.headers["X-Kept"] == "yes"
    assert "zstd" not in got.headers.get("Accept-Encoding", "")
    assert got.headers["Authorization"] == f"Bearer {canaries['gitea-token']}"


async def test_proxy_caller_cannot_override_injected_header(
    gateway: Gateway, canaries: dict[str, str]
) -> None:
    resp = await gateway.request(
        "GET", "/v1/proxy/apikey/echo/x", headers={"X-Api-Key": "attacker", "x-api-key": "again"}
    )
    assert resp.status == 200
    (got,) = gateway.upstream.received
    assert [v for k, v in got.header_items if k.lower() == "x-api-key"] == [canaries["api-key"]]


async def test_proxy_filters_upstream_response_headers(gateway: Gateway) -> None:
    resp = await gateway.request("GET", "/v1/proxy/gitea/headers")
    assert resp.status == 200
    for name in ("Set-Cookie", "WWW-Authenticate", "Proxy-Authenticate", "Keep-Alive"):
        assert name not in resp.headers
    assert resp.headers["X-Custom"] == "kept"


async def test_proxy_returns_redirects_unfollowed(gateway: Gateway) -> None:
    resp = await gateway.request("GET", "/v1/proxy/gitea/status/301?location=/elsewhere")
    assert resp.status == 301
    assert resp.headers["Location"] == "/elsewhere"
    assert len(gateway.upstream.received) == 1


async def test_proxy_redacts_echoed_bearer_everywhere(gateway: Gateway) -> None:
    resp = await gateway.request("GET", "/v1/proxy/gitea/reflect")
    assert resp.status == 302
    text = await resp.text()
    assert '"auth": "[REDACTED]"' in text  # the whole injected value, "Bearer ..." included
    assert resp.headers["X-Echo"] == "[REDACTED]"
    assert resp.headers["Location"] == "https://example.test/cb?t=[REDACTED]"
    outcome = gateway.audit()[-1]
    assert outcome["TURRET_EVENT"] == "outcome" and int(outcome["TURRET_REDACTIONS"]) >= 3


async def test_proxy_basic_auth_under_base_path(gateway: Gateway, canaries: dict[str, str]) -> None:
    resp = await gateway.request("GET", "/v1/proxy/basic/reflect")
    (got,) = gateway.upstream.received
    assert got.raw_path == "/base/reflect"
    pair = base64.b64decode(got.headers["Authorization"].removeprefix("Basic ")).decode()
    assert pair == f"bot:{canaries['basic-password']}"
    assert resp.headers["X-Echo"] == "[REDACTED]"


async def test_proxy_query_auth_replaces_caller_parameter(
    gateway: Gateway, canaries: dict[str, str]
) -> None:
    resp = await gateway.request("GET", "/v1/proxy/q/echo/x?a=1&api_key=mine&API%5Fkey=again")
    assert resp.status == 200
    (got,) = gateway.upstream.received
    assert got.raw_path == f"/echo/x?a=1&api_key={canaries['query-key']}"
    reflected = await gateway.request("GET", "/v1/proxy/q/reflect")
    assert "[REDACTED]" in await reflected.text()


@pytest.mark.parametrize("chunked", [False, True])
async def test_proxy_request_body_limit_is_413(gateway: Gateway, chunked: bool) -> None:
    body = b"z" * 1025

    async def stream() -> AsyncIterator[bytes]:
        yield body

    resp = await gateway.request(
        "POST", "/v1/proxy/gitea/api/v1/user", data=stream() if chunked else body
    )
    assert resp.status == 413
    assert (await resp.json())["error"]["code"] == "request_too_large"
    assert gateway.upstream.received == []


async def test_proxy_request_body_at_limit_passes(gateway: Gateway) -> None:
    resp = await gateway.request("POST", "/v1/proxy/gitea/api/v1/user", data=b"z" * 1024)
    assert resp.status == 200


@pytest.mark.parametrize(
    ("target", "status"),
    [
        ("/big/65536", 200),
        ("/big/65537", 502),
        ("/chunked/65536", 200),
        ("/chunked/70000", 502),
        ("/gzip/1000000", 502),
        ("/gzip/1000", 200),
    ],
)
async def test_proxy_response_size_limit(gateway: Gateway, target: str, status: int) -> None:
    resp = await gateway.request("GET", "/v1/proxy/gitea" + target)
    assert resp.status == status
    if status == 502:
        error = (await resp.json())["error"]
        assert error["code"] == "upstream_error" and "max_response_bytes" in error["message"]
    else:
        assert "Content-Encoding" not in resp.headers
        assert int(resp.headers["Content-Length"]) == int(target.rsplit("/", 1)[1])


async def test_proxy_upstream_timeout_is_504(gateway: Gateway) -> None:
    resp = await gateway.request("GET", "/v1/proxy/gitea/hang")
    assert resp.status == 504
    error = (await resp.json())["error"]
    assert error["code"] == "upstream_timeout"
    assert gateway.upstream.url not in error["message"]
    assert gateway.audit()[-1]["TURRET_STATUS"] == "504"


async def test_proxy_unreachable_upstream_is_502_generic(gateway: Gateway) -> None:
    url = gateway.upstream.url
    await gateway.upstream.server.close()
    resp = await gateway.request("GET", "/v1/proxy/gitea/api/v1/user")
    assert resp.status == 502
    error = (await resp.json())["error"]
    assert error["code"] == "upstream_error"
    assert url not in error["message"] and "127.0.0.1" not in error["message"]


async def test_whoami_lists_grants(gateway: Gateway) -> None:
    resp = await gateway.client.get("/v1/whoami", headers=gateway.auth(gateway.other_token))
    assert resp.status == 200
    assert await resp.json() == {
        "ok": True,
        "agent": "other",
        "grants": {"proxy": [{"service": "gitea", "methods": ["GET"], "paths": ["/api/v1/user"]}]},
    }


async def test_whoami_needs_a_token(gateway: Gateway) -> None:
    resp = await gateway.client.get("/v1/whoami")
    assert resp.status == 401
