"""Attacks on agent authentication: forged, borrowed, smuggled or revoked tokens."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path

import pytest

from tests.adversarial.conftest import Hardened, MakeHardened, error_of
from turret.config import load_config
from turret.providers.build import build_runtime
from turret.web.keys import CONTEXT


def _forged(gw: Hardened) -> dict[str, dict[str, str]]:
    return {
        "no-authorization-header": {},
        "token-of-nobody": {"Authorization": "Bearer turret_forged0000000000000000000000000000"},
        "token-with-trailing-junk": {"Authorization": f"Bearer {gw.token}x"},
        "token-truncated": {"Authorization": f"Bearer {gw.token[:-1]}"},
        "token-in-basic-password": {"Authorization": "Basic b3BlbmNvZGU6" + gw.token},
        "token-with-wrong-scheme": {"Authorization": f"Token {gw.token}"},
        "oversized-token": {"Authorization": "Bearer " + "A" * 600},
        "sha256-of-token-as-token": {
            "Authorization": "Bearer " + hashlib.sha256(gw.token.encode()).hexdigest()
        },
    }


@pytest.mark.parametrize(
    "attack",
    [
        "no-authorization-header",
        "token-of-nobody",
        "token-with-trailing-junk",
        "token-truncated",
        "token-in-basic-password",
        "token-with-wrong-scheme",
        "oversized-token",
        "sha256-of-token-as-token",
    ],
)
async def test_auth_forged_credentials_are_401(hardened: Hardened, attack: str) -> None:
    """Attack: reach an upstream with a token that is not exactly a configured agent's."""
    headers = _forged(hardened)[attack]
    resp = await hardened.client.session.get(
        hardened.url("/v1/proxy/gitea/api/v1/user"), headers=headers
    )
    assert resp.status == 401
    assert (await error_of(resp))["code"] == "unauthorized"
    assert hardened.upstream.received == []
    (record,) = hardened.audit()
    assert record["TURRET_DECISION"] == "deny" and "TURRET_AGENT" not in record


async def test_auth_token_in_query_string_is_not_accepted(hardened: Hardened) -> None:
    """Attack: pass the token as ?access_token= (ends up in upstream and proxy logs)."""
    resp = await hardened.client.session.get(
        hardened.url(f"/v1/proxy/gitea/api/v1/user?access_token={hardened.token}")
    )
    assert resp.status == 401
    assert hardened.upstream.received == []


@pytest.mark.parametrize("order", ["valid-first", "valid-second"])
async def test_auth_two_authorization_headers_are_refused(hardened: Hardened, order: str) -> None:
    """Attack: send two Authorization headers hoping Turret and upstream pick different ones."""
    pair = [("Authorization", f"Bearer {hardened.token}"), ("Authorization", "Bearer other")]
    if order == "valid-second":
        pair.reverse()
    resp = await hardened.client.session.get(
        hardened.url("/v1/proxy/gitea/api/v1/user"), headers=pair
    )
    assert resp.status == 401
    assert hardened.upstream.received == []


async def test_auth_borrowed_grant_other_agent_cannot_use_it(hardened: Hardened) -> None:
    """Attack: agent `other` uses its valid token for a path only `opencode` is granted."""
    resp = await hardened.request(
        "GET", "/v1/proxy/gitea/api/v1/repos/me/x", headers=hardened.auth(hardened.other_token)
    )
    assert resp.status == 403
    assert hardened.upstream.received == []
    assert hardened.audit()[-1]["TURRET_AGENT"] == "other"


async def test_auth_revoked_agent_token_stops_working_on_reload(
    make_hardened: MakeHardened, creds_dir: Path
) -> None:
    """Attack: keep using a token after the agent was removed from the config and reloaded."""
    gw = await make_hardened()
    assert (await gw.request("GET", "/v1/proxy/gitea/api/v1/user")).status == 200
    app = gw.client.app
    current = app[CONTEXT].holder.current.config
    agents = {k: v for k, v in current.agents.items() if k != "opencode"}
    app[CONTEXT].holder.current = build_runtime(replace(current, agents=agents), str(creds_dir))
    resp = await gw.request("GET", "/v1/proxy/gitea/api/v1/user")
    assert resp.status == 401
    assert len(gw.upstream.received) == 1


async def test_auth_whoami_reveals_no_token_or_credential(hardened: Hardened) -> None:
    """Attack: ask whoami to disclose tokens or credentials."""
    resp = await hardened.client.get("/v1/whoami", headers=hardened.auth())
    text = await resp.text()
    assert resp.status == 200 and hardened.token not in text
    assert "sha256" not in text and "credential" not in text


def test_auth_config_refuses_two_agents_sharing_a_token(creds_dir: Path) -> None:
    """Attack: a config where one token authenticates as two agents (ambiguous identity)."""
    digest = "a" * 64
    config = load_config(
        f"agents:\n  a: {{token_sha256: {digest}}}\n  b: {{token_sha256: {digest}}}\n"
    )
    with pytest.raises(Exception, match="same token"):
        build_runtime(config, str(creds_dir))


@pytest.mark.parametrize("target", ["/v1/proxy/gitea/api/v1/user", "/v1/whoami"])
async def test_auth_token_bytes_that_are_not_utf8_are_401(hardened: Hardened, target: str) -> None:
    """Attack: an Authorization header whose bytes are not UTF-8, to crash token hashing (500,
    and no audit record) instead of being refused."""
    received, _ = await hardened.raw(
        f"GET {target} HTTP/1.1\r\nHost: turret\r\n".encode()
        + b"Authorization: Bearer turret_\xff\xfe\r\nConnection: close\r\n\r\n"
    )
    assert received.startswith(b"HTTP/1.1 401 "), received[:200]
    assert hardened.upstream.received == []
    (record,) = hardened.audit()
    assert record["TURRET_DECISION"] == "deny" and "TURRET_AGENT" not in record
