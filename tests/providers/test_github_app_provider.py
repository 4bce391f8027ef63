"""The `github_app` provider through the whole gateway, against a fake GitHub that checks what
the real API requires (`tests.providers.fake_github`): the JWT, the token request narrowed to
the call, the cache per scope, expiry, fail-closed answers, the guards and revocation."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from urllib.parse import quote

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.gateway import Canaries
from tests.pipeline.conftest import Recording
from tests.providers.fake_github import APP_ID, new_key
from tests.providers.github import PEM_CREDENTIAL, GitHubGateway, github_gateway
from turret.config import load_config
from turret.errors import CredentialError
from turret.providers.build import build_runtime
from turret.providers.minting import revoke_all
from turret.web.keys import CONTEXT

# An elliptic-curve key: a valid PEM, but GitHub Apps sign with RSA.
EC_PEM = (
    ec.generate_private_key(ec.SECP256R1())
    .private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    .decode()
)

pytestmark = pytest.mark.usefixtures("leak_check")


async def test_github_app_mints_a_token_narrowed_to_the_call(gh: GitHubGateway) -> None:
    status, body = await gh.call("alpha")
    assert (status, body) == (200, {"ok": True, "result": {"name": "alpha", "private": True}})
    assert gh.fake.refusals == []
    assert gh.fake.token_requests == [
        {"repositories": ["alpha"], "permissions": {"metadata": "read", "issues": "write"}}
    ]
    (claims,) = gh.fake.claims
    now = int(gh.time.wall)
    assert claims == {"iat": now - 60, "exp": now + 540, "iss": str(APP_ID)}
    assert gh.fake.used == [("alpha", gh.fake.tokens[0])]
    (minted,) = gh.audit("credential_minted")
    assert minted["TURRET_PROVIDER"] == "gh-app"
    assert minted["TURRET_AGENT"] == "bot"
    assert minted["TURRET_REQUEST_ID"]
    assert '"repositories":["alpha"]' in minted["TURRET_SCOPE"]
    assert minted["TURRET_EXPIRES"].endswith("Z")


async def test_github_app_each_repository_gets_its_own_token(gh: GitHubGateway) -> None:
    for repo in ("alpha", "beta", "alpha", "beta", "gamma"):
        assert (await gh.call(repo))[0] == 200
    assert len(gh.fake.token_requests) == 3
    tokens = dict(gh.fake.used)
    assert len(set(tokens.values())) == 3
    for repo, token in gh.fake.used:
        issued = next(i for i in gh.fake.issued if i.token == token)
        assert issued.repositories == [repo]  # each request went out with its own repo's token


async def test_github_app_token_is_reused_until_five_minutes_before_expiry(
    gh: GitHubGateway,
) -> None:
    await gh.call("alpha")
    gh.time.advance(3600 - 301)
    await gh.call("alpha")
    assert len(gh.fake.token_requests) == 1
    gh.time.advance(2)
    await gh.call("alpha")
    assert len(gh.fake.token_requests) == 2
    assert gh.fake.used[-1][1] == gh.fake.tokens[1]


async def test_github_app_client_id_is_the_issuer(
    leak_check: Canaries, tmp_path: Path, creds_dir: Path
) -> None:
    issuer = "client_id: Iv23liABCDEFGHIJ"
    async for gateway in github_gateway(leak_check, tmp_path, creds_dir, issuer=issuer):
        assert (await gateway.call("alpha"))[0] == 200
        assert gateway.fake.claims[0]["iss"] == "Iv23liABCDEFGHIJ"


@pytest.mark.parametrize(
    "mode", ["500", "missing_token", "past", "nonjson", "redirect", "huge", "broader"]
)
async def test_github_app_bad_token_answers_fail_closed(gh: GitHubGateway, mode: str) -> None:
    gh.fake.mode = mode
    status, body = await gh.call("alpha")
    assert status == 503
    assert body["error"]["code"] == "credential_unavailable"
    assert len(gh.fake.token_requests) == 4  # one try, three retries
    assert gh.fake.used == []  # nothing forwarded
    (alert,) = gh.audit("credential_mint_failed")
    assert alert["PRIORITY"] == "2"
    assert alert["TURRET_PROVIDER"] == "gh-app"
    assert '"repositories":["alpha"]' in alert["TURRET_SCOPE"]
    assert len(gh.time.slept) == 3
    outcome = [r for r in gh.built.audit() if r["TURRET_EVENT"] == "outcome"][-1]
    assert outcome["TURRET_STATUS"] == "503"


async def test_github_app_upstream_echo_of_the_token_is_redacted(gh: GitHubGateway) -> None:
    status, body = await gh.proxy("/echo")
    assert status == 200
    (token,) = gh.fake.tokens
    assert token.encode() not in body
    assert b"\"Authorization\": \"[REDACTED]\"" in body


async def test_github_app_agent_sending_a_minted_token_is_refused(gh: GitHubGateway) -> None:
    assert (await gh.call("alpha"))[0] == 200
    (token,) = gh.fake.tokens
    b64 = base64.b64encode(token.encode()).decode()
    client, auth = gh.built.client, {"Authorization": f"Bearer {gh.token}"}
    attempts = [
        client.get("/v1/proxy/gh-echo/echo", params={"q": token}, headers=auth),
        client.get("/v1/proxy/gh-echo/echo", headers={**auth, "X-Note": token}),
        client.post("/v1/proxy/gh-echo/echo", data=json.dumps({"b": b64}), headers=auth),
        client.get(f"/v1/proxy/gh-echo/repos/octo/{quote(token, safe='')}", headers=auth),
        client.post("/v1/proxy/gh-echo/echo", data=token.encode().hex(), headers=auth),
    ]
    for attempt in attempts:
        resp = await attempt
        assert resp.status == 403
        assert (await resp.json())["error"]["code"] == "credential_in_request"
    assert len(gh.fake.used) == 1  # only the capability call went out


async def test_github_app_api_url_goes_through_the_address_policy(
    leak_check: Canaries, tmp_path: Path, creds_dir: Path
) -> None:
    # `localhost` is a DNS name: checked against the provider's policy, which (without
    # allow_networks) refuses loopback; the IP literal service URL is used as written.
    async for gateway in github_gateway(leak_check, tmp_path, creds_dir, api_host="localhost"):
        status, body = await gateway.call("alpha")
        assert status == 503
        assert body["error"]["code"] == "credential_unavailable"
        assert gateway.fake.token_requests == []
        (alert,) = gateway.audit("credential_mint_failed")
        assert "address its policy does not allow" in alert["TURRET_REASON"]


async def test_github_app_a_401_from_the_api_mints_anew(gh: GitHubGateway) -> None:
    assert (await gh.call("alpha"))[0] == 200
    gh.fake.issued[0].revoked = True  # revoked at GitHub behind Turret's back
    assert (await gh.call("alpha"))[0] == 200
    assert len(gh.fake.token_requests) == 2
    assert gh.fake.used[-1][1] == gh.fake.tokens[1]


@pytest.mark.parametrize("repo", ["a b", "../admin", "x" * 101, "", "a/b", "é"])
async def test_github_app_a_parameter_that_is_no_repository_name_is_refused(
    gh: GitHubGateway, repo: str
) -> None:
    status, body = await gh.call(repo, "gh.loose")
    assert status == 422
    assert body["error"]["code"] == "invalid_params"
    assert gh.fake.token_requests == []  # not asked, so not retried and no alarm
    assert gh.audit("credential_mint_failed") == []


async def test_github_app_reload_keeps_the_tokens_of_an_unchanged_provider(
    gh: GitHubGateway,
) -> None:
    assert (await gh.call("alpha"))[0] == 200
    holder = gh.built.client.app[CONTEXT].holder
    old = holder.current
    config = load_config(gh.config)
    same = build_runtime(config, str(gh.credentials_dir), old, hooks=gh.time.hooks())
    assert same.providers["gh"].guarded() == old.providers["gh"].guarded() != []
    holder.current = same
    assert (await gh.call("alpha"))[0] == 200
    assert len(gh.fake.token_requests) == 1  # no new mint after the reload
    other, _ = new_key()
    (gh.credentials_dir / PEM_CREDENTIAL).write_text(other)
    gh.built.creds.watch([other])
    rekeyed = build_runtime(load_config(gh.config), str(gh.credentials_dir), same)
    assert rekeyed.providers["gh"].guarded() == []  # a new key: its own tokens from scratch
    # The old key's token is still valid at GitHub: the killswitch still revokes it.
    assert rekeyed.retired == (same.providers["gh"],)
    assert await revoke_all(rekeyed.providers, Recording(), rekeyed.retired) == 1
    assert gh.fake.deletes == 1
    assert build_runtime(load_config(gh.config), str(gh.credentials_dir), rekeyed).retired == ()


def test_github_app_unusable_private_key_stops_start(gh: GitHubGateway) -> None:
    for bad in ("not a pem", EC_PEM):
        (gh.credentials_dir / PEM_CREDENTIAL).write_text(bad)
        with pytest.raises(CredentialError, match=PEM_CREDENTIAL) as caught:
            build_runtime(load_config(gh.config), str(gh.credentials_dir))
        assert "BEGIN" not in str(caught.value)
