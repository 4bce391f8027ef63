"""Attacks that try to make an allowed-looking request do something no grant allows."""

from __future__ import annotations

import pytest

from tests.adversarial.conftest import Hardened, MakeHardened

# Grants of `opencode` on gitea include /api/v1/repos/me/* and /api/v1/repos/me/*/issues/**;
# every target here tries to reach something else (/api/v1/admin, another owner, ...).
PATH_TRICKS = [
    pytest.param("/api/v1/repos/me/%252e%252e/%252e%252e/admin", id="double-encoded-dots"),
    pytest.param("/api/v1/repos/me/%25252e%25252e/admin", id="triple-encoded-dots"),
    pytest.param("/api/v1/repos/me/..%2fadmin", id="dots-with-encoded-slash"),
    pytest.param("/api/v1/repos/me/%2e%2e%5cadmin", id="dots-with-encoded-backslash"),
    pytest.param("/api/v1/repos/me/x/issues/..;/..;/admin", id="tomcat-path-parameter-dots"),
    pytest.param("/api/v1/repos/me/x/issues/%2e%2e%3b/admin", id="encoded-dots-semicolon"),
    pytest.param("/api/v1/repos/me/%ef%bc%8e%ef%bc%8e/admin", id="fullwidth-dots-nfkc"),
    pytest.param("/api/v1/repos/me/%e2%80%a5/admin", id="two-dot-leader-nfkc"),
    pytest.param("/api/v1/repos/me/a%ef%bc%8fb", id="fullwidth-solidus-nfkc"),
    pytest.param("/api/v1/repos/me/%c0%ae%c0%ae/admin", id="overlong-utf8-dots"),
    pytest.param("/api/v1/repos/me/x%00.json", id="nul-byte-truncation"),
    pytest.param("/api/v1/repos/me//admin", id="empty-segment"),
    pytest.param("/api/v1/repos/me/x/", id="trailing-slash-empty-segment"),
    pytest.param("/api/v1/repos/me/%2fadmin", id="leading-encoded-slash"),
    pytest.param("/api/v1/repos/me/x%09", id="encoded-tab"),
]


@pytest.mark.parametrize("path", PATH_TRICKS)
async def test_policy_path_tricks_never_reach_upstream(hardened: Hardened, path: str) -> None:
    """Attack: a path whose decoding or normalisation upstream escapes the granted subtree."""
    resp = await hardened.request("GET", "/v1/proxy/gitea" + path)
    assert resp.status in (400, 403)
    assert hardened.upstream.received == []
    assert hardened.audit()[-1]["TURRET_DECISION"] == "deny"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        pytest.param("PATCH", "/api/v1/user", id="ungranted-method"),
        pytest.param("TRACE", "/api/v1/user", id="trace"),
        pytest.param("OPTIONS", "/api/v1/user", id="options"),
        pytest.param("PROPFIND", "/api/v1/user", id="webdav-method"),
    ],
)
async def test_policy_method_tricks_are_denied(hardened: Hardened, method: str, path: str) -> None:
    """Attack: use a method no grant lists (TRACE reflects headers; WebDAV writes)."""
    resp = await hardened.request(method, "/v1/proxy/gitea" + path)
    assert resp.status in (403, 405, 400)
    assert hardened.upstream.received == []


@pytest.mark.parametrize(
    "header",
    ["X-HTTP-Method-Override", "X-HTTP-Method", "X-Method-Override", "x_http_method_override"],
)
async def test_policy_method_override_headers_are_stripped(hardened: Hardened, header: str) -> None:
    """Attack: a GET grant plus `X-HTTP-Method-Override: DELETE`, obeyed by some frameworks."""
    resp = await hardened.request("GET", "/v1/proxy/gitea/api/v1/user", headers={header: "DELETE"})
    assert resp.status == 200
    (got,) = hardened.upstream.received
    lowered = {k.lower().replace("_", "-") for k, _ in got.header_items}
    assert not lowered & {"x-http-method-override", "x-http-method", "x-method-override"}


def _posted(body: bytes, content_type: str) -> dict[str, object]:
    """The request arguments for a body of this content type (the test then POSTs it)."""
    return {"data": body, "headers": {"Content-Type": content_type}}


@pytest.mark.parametrize(
    ("target", "kwargs"),
    [
        pytest.param("/api/v1/user?_method=DELETE", {}, id="query-_method"),
        pytest.param("/api/v1/user?a=1;_method=DELETE", {}, id="semicolon-_method"),
        pytest.param("/api/v1/user?_%6Dethod=DELETE", {}, id="escaped-_method"),
        pytest.param("/api/v1/user?_METHOD=DELETE", {}, id="uppercase-_method"),
        pytest.param(
            "/api/v1/repos/me/x",
            _posted(b"title=x&_method=DELETE", "application/x-www-form-urlencoded"),
            id="form-body-_method",
        ),
        pytest.param(
            "/api/v1/repos/me/x",
            _posted(
                b'--b\r\nContent-Disposition: form-data; name="_method"\r\n\r\nDELETE\r\n--b--\r\n',
                "multipart/form-data; boundary=b",
            ),
            id="multipart-body-_method",
        ),
        pytest.param(
            "/api/v1/repos/me/x",
            _posted(
                b"--b\r\ncontent-disposition: form-data; NAME=_Method\r\n\r\nDELETE\r\n--b--\r\n",
                "Multipart/Form-Data; boundary=b",
            ),
            id="multipart-unquoted-name-_method",
        ),
    ],
)
async def test_policy_method_override_parameters_are_refused(
    hardened: Hardened, target: str, kwargs: dict[str, object]
) -> None:
    """Attack: a `_method=DELETE` parameter (Rails, Laravel) turning a POST into a DELETE."""
    method = "POST" if "data" in kwargs else "GET"
    resp = await hardened.request(method, "/v1/proxy/gitea" + target, **kwargs)
    assert resp.status == 403
    assert hardened.upstream.received == []
    assert "method override" in hardened.audit()[-1]["TURRET_REASON"]


async def test_policy_multipart_body_without_override_is_forwarded(hardened: Hardened) -> None:
    """Control: a multipart form whose fields merely mention a method is forwarded unchanged."""
    body = b'--b\r\nContent-Disposition: form-data; name="title"\r\n\r\nname=_method\r\n--b--\r\n'
    resp = await hardened.request(
        "POST",
        "/v1/proxy/gitea/api/v1/repos/me/x",
        data=body,
        headers={"Content-Type": "multipart/form-data; boundary=b"},
    )
    assert resp.status == 200
    assert hardened.upstream.received[0].body == body


async def test_policy_report_mode_unknown_service_is_recorded_as_denied(
    make_hardened: MakeHardened,
) -> None:
    """Attack: in report mode, name a service that does not exist; the request is refused, and
    the audit trail must say so rather than record an allow."""
    gw = await make_hardened(grants="    report: true\n")
    resp = await gw.request("GET", "/v1/proxy/nosuch/api/v1/user")
    assert resp.status == 403
    assert gw.upstream.received == []
    (record,) = gw.audit()
    assert (record["TURRET_DECISION"], record["TURRET_STATUS"]) == ("deny", "403")


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({"Host": "evil.example"}, id="host-header"),
        pytest.param({"X-Forwarded-Host": "evil.example"}, id="x-forwarded-host"),
        pytest.param({"Forwarded": "host=evil.example"}, id="forwarded"),
        pytest.param({"X-Original-URL": "/api/v1/admin"}, id="x-original-url-passes-as-data"),
    ],
)
async def test_policy_host_tricks_do_not_change_destination(
    hardened: Hardened, headers: dict[str, str]
) -> None:
    """Attack: steer the upstream host with Host/Forwarded headers: the host comes from config."""
    resp = await hardened.request("GET", "/v1/proxy/gitea/api/v1/user", headers=headers)
    assert resp.status == 200
    (got,) = hardened.upstream.received
    assert got.headers["Host"] == hardened.upstream.url.removeprefix("http://")
    assert got.raw_path == "/api/v1/user"
    assert "X-Forwarded-Host" not in got.headers and "Forwarded" not in got.headers


@pytest.mark.parametrize(
    "target",
    [
        pytest.param("/v1/proxy/GITEA/api/v1/user", id="service-case"),
        pytest.param("/v1/proxy/%67itea/api/v1/user", id="service-percent-encoded"),
        pytest.param("/v1/proxy/gitea@evil.example/api/v1/user", id="service-userinfo"),
        pytest.param("/v1/proxy/gitea:80/api/v1/user", id="service-with-port"),
        pytest.param("/v1/proxy/gitea.evil.example/api/v1/user", id="service-as-hostname"),
        pytest.param("/v1/proxy//gitea/api/v1/user", id="empty-service"),
        pytest.param("/v1/proxy/gitea%2fapi/v1/user", id="service-encoded-slash"),
    ],
)
async def test_policy_service_name_tricks_are_denied(hardened: Hardened, target: str) -> None:
    """Attack: name the service so that a lax lookup finds it, or finds another host."""
    resp = await hardened.request("GET", target)
    assert resp.status in (400, 403)
    assert hardened.upstream.received == []


async def test_policy_absolute_form_target_cannot_pick_a_host(hardened: Hardened) -> None:
    """Attack: `GET http://evil.example/v1/proxy/...` (absolute-form, as sent to proxies)."""
    head = (
        "GET http://evil.example/v1/proxy/gitea/api/v1/user HTTP/1.1\r\n"
        f"Host: 127.0.0.1\r\nAuthorization: Bearer {hardened.token}\r\n"
        "Connection: close\r\n\r\n"
    )
    data, _ = await hardened.raw(head.encode())
    assert data.startswith(b"HTTP/1.1 400")
    assert hardened.upstream.received == []


@pytest.mark.parametrize(
    "query",
    [
        pytest.param("api_key=mine", id="same-name"),
        pytest.param("API_KEY=mine", id="upper-case"),
        pytest.param("api%5fkey=mine", id="percent-encoded-name"),
        pytest.param("api_key[]=mine", id="array-suffix"),
        pytest.param("api_key[x]=mine", id="hash-suffix"),
        pytest.param("a=1;api_key=mine", id="semicolon-separator"),
        pytest.param("api_key=mine&api_key=again", id="repeated"),
    ],
)
async def test_policy_query_auth_cannot_be_overridden(
    hardened: Hardened, canaries: dict[str, str], query: str
) -> None:
    """Attack: supply the query-auth parameter yourself so the upstream uses your value."""
    resp = await hardened.request("GET", f"/v1/proxy/q/echo/x?{query}")
    assert resp.status == 200
    (got,) = hardened.upstream.received
    sent = got.raw_path.partition("?")[2]
    assert "mine" not in sent and "again" not in sent
    assert sent.endswith(f"api_key={canaries['query-key']}")


@pytest.mark.parametrize("name", ["X-Api-Key", "x-api-key", "X_Api_Key", "x_api_key"])
async def test_policy_injected_header_cannot_be_shadowed(
    hardened: Hardened, canaries: dict[str, str], name: str
) -> None:
    """Attack: send the injected header (or its CGI alias with `_`) with your own value."""
    resp = await hardened.request("GET", "/v1/proxy/apikey/echo/x", headers={name: "attacker"})
    assert resp.status == 200
    (got,) = hardened.upstream.received
    values = [v for k, v in got.header_items if k.lower().replace("_", "-") == "x-api-key"]
    assert values == [canaries["api-key"]]
