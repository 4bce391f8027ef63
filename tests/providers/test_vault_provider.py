"""The `vault` provider through a whole gateway, against the fake Vault: KV and dynamic
credentials minted, cached, refreshed or renewed on a controlled clock, revoked on killswitch,
the three retries then 503 with the alert, and no value anywhere it must not be."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import Upstream, assert_error
from tests.gateway import Canaries
from tests.pipeline.conftest import Recording
from tests.providers.cloudgw import CloudGateway, agent_block, cloud_gateway
from tests.providers.fakevault import FakeVault
from tests.providers.minters import FakeTime
from turret.config import load_config
from turret.errors import ConfigError
from turret.providers.minting import revoke_all
from turret.providers.vault import VaultProvider

Vault = tuple[FakeVault, str]
GRANT = """\
    proxy:
      - {service: git, methods: [GET, POST], paths: ["/api/**"]}
"""


def config(vault_url: str, upstream: Upstream, scope: str) -> str:
    return f"""
providers:
  vault-main:
    type: vault
    url: {vault_url}
    role_id: vault-role-id
    secret_id: vault-secret-id
services:
  git:
    url: {upstream.url}
    auth: {{provider: vault-main, {scope}}}
"""


@dataclass
class Env:
    """A test's fake Vault, fake upstream, canaries, directory and clocks."""

    fake: FakeVault
    url: str
    upstream: Upstream
    creds: Canaries
    tmp_path: Path
    clock: FakeTime

    async def gateway(self, scope: str) -> CloudGateway:
        token = self.creds.mint()
        text = config(self.url, self.upstream, scope) + agent_block(token, GRANT)
        sources = {"vault-role-id": self.fake.role_id, "vault-secret-id": self.fake.secret_id}
        return await self.custom(text, sources, token)

    async def custom(self, text: str, sources: dict[str, str], token: str) -> CloudGateway:
        return await cloud_gateway(
            text,
            creds=self.creds,
            tmp_path=self.tmp_path,
            sources=sources,
            token=token,
            time=self.clock,
        )


@pytest.fixture
def env(
    vault: Vault, upstream: Upstream, leak_check: Canaries, tmp_path: Path, clock: FakeTime
) -> Env:
    return Env(vault[0], vault[1], upstream, leak_check, tmp_path, clock)


async def get(gw: CloudGateway, path: str = "/api/v1/user") -> aiohttp.ClientResponse:
    return await gw.client.get(f"/v1/proxy/git{path}", headers=gw.auth())


KV = "kv: {mount: secret, path: team/gitea, field: token, refresh: 300}"
DYNAMIC = "dynamic: {mount: consul, role: deploy, field: token, increment: 600}"


def sent(upstream: Upstream) -> str:
    return upstream.received[-1].headers["Authorization"]


async def test_vault_kv_minted_once_and_cached(env: Env) -> None:
    fake = env.fake
    fake.put_kv("secret", "team/gitea", {"token": "CANARY-kv-first-0123456789"})
    gw = await env.gateway(KV)
    for _ in range(3):
        resp = await get(gw)
        assert resp.status == 200
        assert "CANARY-kv-first" not in await resp.text()  # the echo guard
    assert sent(env.upstream) == "Bearer CANARY-kv-first-0123456789"
    assert [c.path for c in fake.calls] == ["/v1/auth/approle/login", "/v1/secret/data/team/gitea"]
    (minted,) = gw.records("credential_minted")
    assert minted["TURRET_PROVIDER"] == "vault-main"
    assert minted["TURRET_SERVICE"] == "git"


async def test_vault_kv_refreshed_after_refresh_and_age_reported(env: Env) -> None:
    fake = env.fake
    fake.put_kv("secret", "team/gitea", {"token": "CANARY-kv-old-0123456789"})
    gw = await env.gateway(KV)
    assert (await get(gw)).status == 200
    provider = gw.provider("git")
    assert isinstance(provider, VaultProvider)
    assert provider.created_at == pytest.approx(env.clock.wall, abs=1e-3)
    env.clock.advance(100)
    rotated_at = env.clock.wall
    fake.put_kv("secret", "team/gitea", {"token": "CANARY-kv-new-0123456789"})
    env.clock.advance(199)
    assert (await get(gw)).status == 200
    assert sent(env.upstream) == "Bearer CANARY-kv-old-0123456789"  # still within refresh
    env.clock.advance(2)
    assert (await get(gw)).status == 200
    assert sent(env.upstream) == "Bearer CANARY-kv-new-0123456789"
    assert provider.created_at == pytest.approx(rotated_at, abs=1e-3)
    assert len(gw.records("credential_minted")) == 2


async def test_vault_kv_pinned_version_is_read(env: Env) -> None:
    fake = env.fake
    fake.put_kv("secret", "team/gitea", {"token": "CANARY-kv-v1-0123456789"})
    fake.put_kv("secret", "team/gitea", {"token": "CANARY-kv-v2-0123456789"})
    scope = "kv: {mount: secret, path: team/gitea, field: token, version: 1}"
    gw = await env.gateway(scope)
    assert (await get(gw)).status == 200
    assert sent(env.upstream) == "Bearer CANARY-kv-v1-0123456789"
    assert fake.calls[-1].query == {"version": "1"}


async def test_vault_header_and_prefix_of_the_scope(env: Env) -> None:
    fake = env.fake
    fake.put_kv("secret", "svc", {"key": "CANARY-kv-hdr-0123456789"})
    scope = 'kv: {mount: secret, path: svc, field: key}, header: X-Api-Key, prefix: ""'
    gw = await env.gateway(scope)
    assert (await get(gw)).status == 200
    assert env.upstream.received[-1].headers["X-Api-Key"] == "CANARY-kv-hdr-0123456789"
    assert "Authorization" not in env.upstream.received[-1].headers


async def test_vault_dynamic_lease_renewed_then_replaced_then_revoked(env: Env) -> None:
    fake = env.fake
    fake.lease_ttl, fake.lease_max_ttl, fake.token_ttl = 600, 1000, 7200
    gw = await env.gateway(DYNAMIC)
    assert (await get(gw)).status == 200
    (first,) = fake.leases.values()
    assert sent(env.upstream) == "Bearer " + first.data["token"]
    env.clock.advance(539)  # still more than a minute left: cached
    assert (await get(gw)).status == 200
    assert len(fake.leases) == 1 and fake.calls[-1].path == "/v1/consul/creds/deploy"
    env.clock.advance(2)  # within the last minute: renewed, the same credential
    assert (await get(gw)).status == 200
    assert fake.calls[-1].path == "/v1/sys/leases/renew"
    assert json.loads(fake.calls[-1].body) == {"lease_id": first.lease_id, "increment": 600}
    assert sent(env.upstream) == "Bearer " + first.data["token"]
    assert len(fake.leases) == 1
    env.clock.advance(400)  # the renewal reached the role's max TTL (1000 s): a new lease
    assert (await get(gw)).status == 200
    assert len(fake.leases) == 2
    second = list(fake.leases.values())[-1]
    assert sent(env.upstream) == "Bearer " + second.data["token"]
    revoked = await revoke_all({"git": gw.provider("git")}, Recording())
    assert revoked == 2  # the renewed lease once, the new one
    assert all(lease.revoked for lease in fake.leases.values())
    assert fake.calls[-1].path == "/v1/auth/token/revoke-self"
    assert fake.tokens == {}


async def test_vault_killswitch_revoke_failure_is_reported(env: Env) -> None:
    fake = env.fake
    gw = await env.gateway(DYNAMIC)
    assert (await get(gw)).status == 200
    fake.fail_next = 100
    recording = Recording()
    assert await revoke_all({"git": gw.provider("git")}, recording) == 0
    reasons = [f["TURRET_REASON"] for _, _, f in recording.records]
    assert reasons == ["vault revoke: HTTP 503", "vault token revoke: HTTP 503"]


async def test_vault_down_retries_three_times_then_503_with_alert(env: Env) -> None:
    fake = env.fake
    fake.put_kv("secret", "team/gitea", {"token": "CANARY-kv-down-0123456789"})
    gw = await env.gateway(KV)
    fake.fail_next = 100
    resp = await get(gw)
    await assert_error(resp, 503, "credential_unavailable")
    assert len(fake.calls) == 4  # one try and three retries
    assert env.upstream.received == []  # nothing forwarded
    assert len(env.clock.slept) == 3
    (alert,) = gw.records("credential_mint_failed")
    assert alert["PRIORITY"] == "2"
    assert alert["TURRET_PROVIDER"] == "vault-main"
    assert "HTTP 503" in alert["TURRET_REASON"]


@pytest.mark.parametrize(
    ("where", "kind"),
    [
        ("/v1/auth/approle/login", "no-token"),
        ("/v1/auth/approle/login", "bad-ttl"),
        ("/v1/auth/approle/login", "not-json"),
        ("/v1/secret/", "no-data"),
        ("/v1/secret/", "array"),
    ],
)
async def test_vault_malformed_answers_fail_closed(
    env: Env,
    where: str,
    kind: str,
) -> None:
    fake = env.fake
    fake.put_kv("secret", "team/gitea", {"token": "CANARY-kv-bad-0123456789"})
    fake.malformed = (where, kind)
    gw = await env.gateway(KV)
    await assert_error(await get(gw), 503, "credential_unavailable")
    assert env.upstream.received == []


async def test_vault_namespace_and_token_auth(env: Env) -> None:
    fake, url = env.fake, env.url
    fake.namespace = "team-a"
    fake.put_kv("secret", "svc", {"token": "CANARY-kv-tok-0123456789"})
    static = "CANARY-vault-token-" + "0" * 8
    fake.tokens[static] = float("inf")
    token = env.creds.mint()
    text = f"""
providers:
  vault-main: {{type: vault, url: {url}, namespace: team-a, token: vault-token}}
services:
  git:
    url: {env.upstream.url}
    auth: {{provider: vault-main, kv: {{mount: secret, path: svc, field: token}}}}
""" + agent_block(token, GRANT)
    gw = await env.custom(text, {"vault-token": static}, token)
    assert (await get(gw)).status == 200
    (read,) = fake.calls
    assert read.headers["X-Vault-Namespace"] == "team-a"
    assert read.headers["X-Vault-Token"] == static
    await revoke_all({"git": gw.provider("git")}, Recording())
    assert static in fake.tokens  # the operator's token is not Turret's to revoke


async def test_vault_token_revoked_outside_turret_means_a_new_login(env: Env) -> None:
    env.fake.put_kv("secret", "team/gitea", {"token": "CANARY-kv-relog-0123456789"})
    gw = await env.gateway(KV)
    assert (await get(gw)).status == 200
    env.fake.tokens.clear()  # an operator revoked Turret's token in Vault
    env.clock.advance(301)
    assert (await get(gw)).status == 200  # the refused read, then a retry that logs in
    paths = [c.path for c in env.fake.calls]
    assert paths[2:] == [
        "/v1/secret/data/team/gitea",
        "/v1/auth/approle/login",
        "/v1/secret/data/team/gitea",
    ]


async def test_vault_minted_value_refused_in_an_agent_request(env: Env) -> None:
    env.fake.put_kv("secret", "team/gitea", {"token": "CANARY-kv-exfil-0123456789"})
    gw = await env.gateway(KV)
    assert (await get(gw)).status == 200
    for body in ("CANARY-kv-exfil-0123456789", "Q0FOQVJZLWt2LWV4ZmlsLTAxMjM0NTY3ODk="):
        resp = await gw.client.post("/v1/proxy/git/api/x", data=body, headers=gw.auth())
        await assert_error(resp, 403, "credential_in_request")
    assert len(env.upstream.received) == 1


@pytest.mark.parametrize("allow", ["", "allow_networks: [127.0.0.0/8]"])
async def test_vault_url_goes_through_its_address_policy(env: Env, allow: str) -> None:
    env.fake.put_kv("secret", "svc", {"token": "CANARY-kv-policy-0123456789"})
    named = env.url.replace("127.0.0.1", "localhost")  # a name: resolved, then checked
    token = env.creds.mint()
    text = f"""
providers:
  vault-main:
    {{type: vault, url: {named}, role_id: vault-role-id, secret_id: vault-secret-id, {allow}}}
services:
  git:
    url: {env.upstream.url}
    auth: {{provider: vault-main, kv: {{mount: secret, path: svc, field: token}}}}
""" + agent_block(token, GRANT)
    sources = {"vault-role-id": env.fake.role_id, "vault-secret-id": env.fake.secret_id}
    gw = await env.custom(text, sources, token)
    resp = await get(gw)
    if allow:
        assert resp.status == 200
        return
    await assert_error(resp, 503, "credential_unavailable")
    assert env.fake.calls == []
    (alert,) = gw.records("credential_mint_failed")
    assert "address policy refused" in alert["TURRET_REASON"]
    assert "loopback" in alert["TURRET_REASON"]


@pytest.mark.parametrize(
    ("provider", "scope", "message"),
    [
        (
            "{type: vault, url: http://v, role_id: r}",
            "kv: {mount: s, path: p, field: f}",
            "needs either role_id and secret_id",
        ),
        (
            "{type: vault, url: http://v, token: t, role_id: r, secret_id: s}",
            "kv: {mount: s, path: p, field: f}",
            "needs either role_id and secret_id",
        ),
        ("{type: vault, url: ftp://v, token: t}", "kv: {mount: s, path: p, field: f}", "scheme"),
        (
            "{type: vault, url: http://v, token: t}",
            "kv: {mount: s, path: p, field: f}, dynamic: {mount: d, role: r, field: f}",
            "exactly one of kv and dynamic",
        ),
        (
            "{type: vault, url: http://v, token: t}",
            "kv: {mount: s, path: '{repo}', field: f}",
            "kv.path",
        ),
        (
            "{type: vault, url: http://v, token: t}",
            "kv: {mount: s, path: a/../b, field: f}",
            "kv.path",
        ),
        (
            "{type: vault, url: http://v, token: t}",
            "kv: {mount: s, path: p, field: f, version: 0}",
            "kv.version",
        ),
        (
            "{type: vault, url: http://v, token: t}",
            "dynamic: {mount: d, role: r/x, field: f}",
            "dynamic.role",
        ),
        (
            "{type: vault, url: http://v, token: t, namespace: '../x'}",
            "kv: {mount: s, path: p, field: f}",
            "namespace",
        ),
    ],
)
def test_vault_config_errors_name_the_key(provider: str, scope: str, message: str) -> None:
    text = f"""
providers:
  v: {provider}
services:
  git:
    url: http://git.example
    auth: {{provider: v, {scope}}}
agents: {{}}
"""
    with pytest.raises(ConfigError) as failed:
        load_config(text)
    assert message in str(failed.value)
