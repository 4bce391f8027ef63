"""SSRF and DNS rebinding: the agent must never reach an address the service's policy forbids."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from tests.adversarial.conftest import Hardened, MakeHardened, error_of
from tests.conftest import Upstream


@dataclass
class Site:
    """A loopback server that records hits and closes every connection after answering."""

    server: TestServer
    hits: list[str] = field(default_factory=list)

    @property
    def port(self) -> int:
        assert self.server.port is not None
        return self.server.port


async def _site(host: str, port: int = 0) -> Site:
    hits: list[str] = []

    async def handler(request: web.Request) -> web.Response:
        hits.append(request.path)
        resp = web.Response(text=f"hello from {host}")
        resp.force_close()  # so every request makes a new connection, resolved afresh
        return resp

    app = web.Application()
    app.router.add_get("/{tail:.*}", handler)
    server = TestServer(app, host=host, port=port)
    await server.start_server()
    return Site(server, hits)


@pytest.fixture
async def sites() -> AsyncIterator[tuple[Site, Site]]:
    """An allowed site on 127.0.0.1 and an "internal" one on 127.0.0.2, on the same port."""
    public = await _site("127.0.0.1")
    internal = await _site("127.0.0.2", public.port)
    yield public, internal
    await public.server.close()
    await internal.server.close()


def _service(name: str, url: str, allow: str = "") -> str:
    allow_line = f"    allow_networks: {allow}\n" if allow else ""
    auth = "    auth: {bearer: gitea-token}\n    timeout: 2\n"
    return f"  {name}:\n    url: {url}\n{auth}{allow_line}"


def _grant(*names: str) -> str:
    return "".join(
        f"      - service: {n}\n        methods: [GET, POST]\n        paths: ['/**']\n"
        for n in names
    )


async def _refused(gw: Hardened, target: str) -> str:
    resp = await gw.request("GET", target)
    assert resp.status == 502
    error = await error_of(resp)
    assert error["code"] == "upstream_error" and "policy" in error["message"]
    for detail in ("127.0.0", "localhost", ".test", str(gw.upstream.server.port)):
        assert detail not in error["message"]
    return gw.audit()[-1]["TURRET_REASON"]


async def test_ssrf_dns_name_to_loopback_refused_by_default(
    make_hardened: MakeHardened, upstream: Upstream
) -> None:
    """Attack: a service URL (or a rebound name) that resolves to loopback, via real DNS."""
    gw = await make_hardened(
        real_dns=True,
        services=_service("local", f"http://localhost:{upstream.server.port}"),
        grants=_grant("local"),
    )
    reason = await _refused(gw, "/v1/proxy/local/x")
    assert "loopback" in reason
    assert gw.upstream.received == []


async def test_ssrf_allow_networks_widens_policy_explicitly(
    make_hardened: MakeHardened, upstream: Upstream
) -> None:
    """Control: the operator allows loopback for one service; only then does it work."""
    port = upstream.server.port
    gw = await make_hardened(
        real_dns=True,
        services=_service("local", f"http://localhost:{port}", "[127.0.0.0/8, '::1/128']"),
        grants=_grant("local"),
    )
    resp = await gw.request("GET", "/v1/proxy/local/x")
    assert resp.status == 200
    assert len(gw.upstream.received) == 1


@pytest.mark.parametrize(
    "address",
    [
        pytest.param("169.254.169.254", id="cloud-metadata"),
        pytest.param("10.0.0.5", id="rfc1918"),
        pytest.param("100.64.1.1", id="cgnat"),
        pytest.param("0.0.0.0", id="unspecified-reaches-localhost"),  # noqa: S104
        pytest.param("224.0.0.1", id="multicast"),
        pytest.param("fd00::1", id="unique-local"),
        pytest.param("fe80::1", id="link-local-v6"),
        pytest.param("::ffff:127.0.0.1", id="ipv4-mapped-loopback"),
        pytest.param("64:ff9b::7f00:1", id="nat64-loopback"),
        pytest.param("2002:7f00:1::1", id="6to4-loopback"),
        pytest.param("2001:0:4136:e378:8000:63bf:f5ff:fffe", id="teredo-private-client"),
        pytest.param("::", id="unspecified-v6"),
    ],
)
async def test_ssrf_resolved_internal_addresses_are_refused(
    make_hardened: MakeHardened, upstream: Upstream, address: str
) -> None:
    """Attack: the service's DNS name answers with an internal address, in any disguise."""
    port = upstream.server.port
    gw = await make_hardened(
        hosts={"api.example.test": [[address]]},
        services=_service("svc", f"http://api.example.test:{port}"),
        grants=_grant("svc"),
    )
    await _refused(gw, "/v1/proxy/svc/x")
    assert gw.upstream.received == []
    assert gw.resolver.calls == ["api.example.test"]


async def test_ssrf_mixed_answer_connects_only_to_checked_address(
    make_hardened: MakeHardened, sites: tuple[Site, Site]
) -> None:
    """Attack: the answer lists an internal address first, hoping the client tries it."""
    public, internal = sites
    gw = await make_hardened(
        hosts={"svc.test": [["127.0.0.2", "127.0.0.1"]]},
        services=_service("svc", f"http://svc.test:{public.port}", "['127.0.0.1/32']"),
        grants=_grant("svc"),
    )
    for _ in range(3):
        resp = await gw.request("GET", "/v1/proxy/svc/x")
        assert resp.status == 200
    assert len(public.hits) == 3 and internal.hits == []


async def test_ssrf_dns_rebinding_between_requests_is_refused(
    make_hardened: MakeHardened, sites: tuple[Site, Site]
) -> None:
    """Attack: DNS rebinding: the first answer is allowed, the next (short TTL) is internal."""
    public, internal = sites
    gw = await make_hardened(
        hosts={"svc.test": [["127.0.0.1"], ["127.0.0.2"]]},
        services=_service("svc", f"http://svc.test:{public.port}", "['127.0.0.1/32']"),
        grants=_grant("svc"),
    )
    assert (await gw.request("GET", "/v1/proxy/svc/x")).status == 200
    await _refused(gw, "/v1/proxy/svc/x")
    assert gw.resolver.calls == ["svc.test", "svc.test"]
    assert len(public.hits) == 1 and internal.hits == []


async def test_ssrf_pooled_connection_not_shared_across_policies(
    make_hardened: MakeHardened, sites: tuple[Site, Site]
) -> None:
    """Attack: ride a keep-alive connection opened for a laxer service to the same host:port."""
    public, _ = sites
    gw = await make_hardened(
        hosts={"shared.test": [["127.0.0.1"]]},
        services=_service("lax", f"http://shared.test:{public.port}", "['127.0.0.1/32']")
        + _service("strict", f"http://shared.test:{public.port}"),
        grants=_grant("lax", "strict"),
    )
    assert (await gw.request("GET", "/v1/proxy/lax/x")).status == 200
    await _refused(gw, "/v1/proxy/strict/x")
    assert len(public.hits) == 1


async def test_ssrf_ip_literal_in_config_is_used_as_written(hardened: Hardened) -> None:
    """Control: an IP literal in `url` is the operator's explicit choice; no DNS is consulted."""
    resp = await hardened.request("GET", "/v1/proxy/gitea/api/v1/user")
    assert resp.status == 200
    assert hardened.resolver.calls == []


async def test_ssrf_upstream_redirect_to_metadata_is_not_followed(hardened: Hardened) -> None:
    """Attack: an allowed upstream redirects to the metadata service hoping Turret follows."""
    target = "/v1/proxy/gitea/status/302?location=http://169.254.169.254/latest/meta-data/"
    resp = await hardened.request("GET", target)
    assert resp.status == 302
    assert len(hardened.upstream.received) == 1
    assert hardened.resolver.calls == []
