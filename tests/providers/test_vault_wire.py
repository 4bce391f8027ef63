"""The Vault/OpenBao client (`turret.providers.vault_api`) against the fake Vault: every call's
method, path, headers and body as the API documents them, and every malformed answer refused."""

from __future__ import annotations

import json

import aiohttp
import pytest

from tests.providers.fakevault import FakeVault
from tests.providers.minters import FakeTime
from turret.providers.minting import MintFailed
from turret.providers.vault_api import (
    VaultServer,
    VaultToken,
    login_approle,
    read_creds,
    read_kv,
    renew_lease,
    revoke_lease,
    revoke_self,
)
from turret.secret import Secret

Vault = tuple[FakeVault, str]


async def _login(
    http: aiohttp.ClientSession, vault: Vault, namespace: str | None = None
) -> tuple[VaultServer, VaultToken]:
    fake, url = vault
    server = VaultServer(url, namespace)
    token = await login_approle(
        http, server, Secret(fake.role_id), Secret(fake.secret_id), fake.clock()
    )
    return server, token


async def test_vault_login_sends_exactly_what_the_api_documents(
    http: aiohttp.ClientSession, vault: Vault, clock: FakeTime
) -> None:
    fake, _ = vault
    _, token = await _login(http, vault)
    (call,) = fake.calls
    assert (call.method, call.path) == ("POST", "/v1/auth/approle/login")
    assert call.headers["Content-Type"] == "application/json"
    assert call.headers["X-Vault-Request"] == "true"
    assert "X-Vault-Token" not in call.headers
    assert json.loads(call.body) == {"role_id": fake.role_id, "secret_id": fake.secret_id}
    assert token.expires_at == clock.wall + fake.token_ttl
    assert fake.tokens[token.token.reveal()] == token.expires_at


async def test_vault_login_refused_is_a_source_failure_without_the_answer_text(
    http: aiohttp.ClientSession, vault: Vault
) -> None:
    fake, url = vault
    with pytest.raises(MintFailed) as failed:
        await login_approle(http, VaultServer(url), Secret(fake.role_id), Secret("wrong"), 0.0)
    assert failed.value.cause == "vault approle login: HTTP 400"


async def test_vault_namespace_header_on_every_call(
    http: aiohttp.ClientSession, vault: Vault
) -> None:
    fake, _ = vault
    fake.namespace = "team-a/prod"
    fake.put_kv("secret", "svc", {"token": "CANARY-kv-ns"})
    server, token = await _login(http, vault, "team-a/prod")
    await read_kv(http, server, token.token, ("secret", "svc", "token", None))
    assert [c.headers["X-Vault-Namespace"] for c in fake.calls] == ["team-a/prod"] * 2
    with pytest.raises(MintFailed, match="HTTP 403"):
        await _login(http, vault)  # without the namespace, the mount is not there


async def test_vault_kv_read_latest_and_pinned_version(
    http: aiohttp.ClientSession, vault: Vault, clock: FakeTime
) -> None:
    fake, _ = vault
    fake.put_kv("secret", "team/gitea", {"token": "CANARY-kv-v1"})
    first = clock.wall
    clock.wall += 86400
    fake.put_kv("secret", "team/gitea", {"token": "CANARY-kv-v2", "other": "x"})
    server, token = await _login(http, vault)
    latest = await read_kv(http, server, token.token, ("secret", "team/gitea", "token", None))
    pinned = await read_kv(http, server, token.token, ("secret", "team/gitea", "token", 1))
    assert (latest.value.reveal(), latest.version) == ("CANARY-kv-v2", 2)
    assert latest.created_at == pytest.approx(clock.wall, abs=1e-3)
    assert (pinned.value.reveal(), pinned.version) == ("CANARY-kv-v1", 1)
    assert pinned.created_at == pytest.approx(first, abs=1e-3)
    reads = fake.calls[1:]
    assert [(c.method, c.path, c.query) for c in reads] == [
        ("GET", "/v1/secret/data/team/gitea", {}),
        ("GET", "/v1/secret/data/team/gitea", {"version": "1"}),
    ]
    assert all(c.headers["X-Vault-Token"] == token.token.reveal() for c in reads)
    assert all(c.body == b"" for c in reads)


async def test_vault_kv_path_segments_are_encoded(
    http: aiohttp.ClientSession, vault: Vault
) -> None:
    fake, _ = vault
    server, token = await _login(http, vault)
    with pytest.raises(MintFailed, match="HTTP 404"):
        await read_kv(http, server, token.token, ("secret", "a?b#c/%2e%2e", "token", None))
    assert fake.calls[-1].path == "/v1/secret/data/a?b#c/%2e%2e"  # decoded by the server


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        ("not-json", "answer is not JSON"),
        ("array", "answer is not a JSON object"),
        ("no-data", "no 'data.data' and 'data.metadata'"),
    ],
)
async def test_vault_kv_malformed_answers_fail_closed(
    http: aiohttp.ClientSession, vault: Vault, kind: str, reason: str
) -> None:
    fake, _ = vault
    fake.put_kv("secret", "svc", {"token": "CANARY-kv-m"})
    server, token = await _login(http, vault)
    fake.malformed = ("/v1/secret/", kind)
    with pytest.raises(MintFailed, match=reason):
        await read_kv(http, server, token.token, ("secret", "svc", "token", None))


async def test_vault_kv_missing_or_unusable_field_fails_closed(
    http: aiohttp.ClientSession, vault: Vault
) -> None:
    fake, _ = vault
    fake.put_kv("secret", "svc", {"token": "two\nlines", "empty": ""})
    server, token = await _login(http, vault)
    for field in ("absent", "token", "empty"):
        with pytest.raises(MintFailed) as failed:
            await read_kv(http, server, token.token, ("secret", "svc", field, None))
        assert "two" not in failed.value.cause


@pytest.mark.parametrize("kind", ["not-json", "no-token", "bad-ttl", "array"])
async def test_vault_login_malformed_answers_fail_closed(
    http: aiohttp.ClientSession, vault: Vault, kind: str
) -> None:
    fake, _ = vault
    fake.malformed = ("/v1/auth/approle/login", kind)
    with pytest.raises(MintFailed):
        await _login(http, vault)


@pytest.mark.parametrize(
    "kind",
    [
        "not-json",
        "array",
        "no-lease-id",
        "bad-renewable",
        "negative-ttl",
        "no-field",
        "huge-ttl-bool",
    ],
)
async def test_vault_dynamic_malformed_answers_fail_closed(
    http: aiohttp.ClientSession, vault: Vault, clock: FakeTime, kind: str
) -> None:
    fake, _ = vault
    server, token = await _login(http, vault)
    fake.malformed = ("/v1/consul/", kind)
    with pytest.raises(MintFailed):
        await read_creds(http, server, token.token, ("consul", "deploy", "token"), clock.wall)


async def test_vault_dynamic_lease_renew_and_revoke(
    http: aiohttp.ClientSession, vault: Vault, clock: FakeTime
) -> None:
    fake, _ = vault
    fake.lease_max_ttl = 900
    server, token = await _login(http, vault)
    start = clock.wall
    lease = await read_creds(http, server, token.token, ("consul", "deploy", "token"), clock.wall)
    assert lease.lease_id.startswith("consul/creds/deploy/")
    assert lease.value.reveal() == fake.leases[lease.lease_id].data["token"]
    assert (lease.expires_at, lease.renewable) == (clock.wall + fake.lease_ttl, True)
    clock.wall += 100
    ends = await renew_lease(
        http, server, token.token, lease_id=lease.lease_id, increment=300, now=clock.wall
    )
    assert ends == clock.wall + 300
    clock.wall += 200  # asking past the role's max TTL: Vault grants only what is left
    ends = await renew_lease(
        http, server, token.token, lease_id=lease.lease_id, increment=900, now=clock.wall
    )
    assert ends == start + 900
    await revoke_lease(http, server, token.token, lease.lease_id)
    assert fake.leases[lease.lease_id].revoked
    renew, revoke = fake.calls[-2:]
    assert (renew.method, renew.path) == ("PUT", "/v1/sys/leases/renew")
    assert json.loads(renew.body) == {"lease_id": lease.lease_id, "increment": 900}
    assert (revoke.method, revoke.path) == ("PUT", "/v1/sys/leases/revoke")
    assert json.loads(revoke.body) == {"lease_id": lease.lease_id}
    assert revoke.headers["Content-Type"] == "application/json"
    await revoke_self(http, server, token.token)
    assert fake.revoked_tokens == [token.token.reveal()]
    assert (fake.calls[-1].method, fake.calls[-1].path) == ("POST", "/v1/auth/token/revoke-self")


async def test_vault_expired_token_is_refused(
    http: aiohttp.ClientSession, vault: Vault, clock: FakeTime
) -> None:
    fake, _ = vault
    fake.put_kv("secret", "svc", {"token": "CANARY-kv-e"})
    server, token = await _login(http, vault)
    clock.wall = token.expires_at
    with pytest.raises(MintFailed, match="HTTP 403"):
        await read_kv(http, server, token.token, ("secret", "svc", "token", None))


async def test_vault_unreachable_and_oversized_fail_closed(
    http: aiohttp.ClientSession, vault: Vault
) -> None:
    fake, _ = vault
    with pytest.raises(MintFailed, match="unreachable"):
        await login_approle(http, VaultServer("http://127.0.0.1:9"), Secret("r"), Secret("s"), 0)
    fake.put_kv("secret", "big", {"token": "x" * 300_000})
    server, token = await _login(http, vault)
    with pytest.raises(MintFailed, match="larger than"):
        await read_kv(http, server, token.token, ("secret", "big", "token", None))
