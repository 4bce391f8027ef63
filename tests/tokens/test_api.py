"""`POST/GET/DELETE /v1/tokens` and using a derived token, end to end over HTTP."""

from __future__ import annotations

from tests.tokens.conftest import LeaseGateway

ISSUES = {
    "name": "gitea.create_issue",
    "params": {"repo": {"one_of": ["turret"]}, "title": {"max_length": 80}},
}
READ = {"service": "gitea", "methods": ["GET"], "paths": ["/api/v1/repos/me/turret/**"]}


async def test_mint_answers_token_once_and_its_scope(lgw: LeaseGateway) -> None:
    body = {"ttl": "15m", "capabilities": [ISSUES], "proxy": [READ]}
    resp = await lgw.mint(lgw.tokens["alice"], body)
    assert resp.status == 201
    body = await resp.json()
    assert body["ok"] is True and body["token"].startswith("turret_") and len(body["token"]) == 50
    assert body["id"].startswith("tok_") and body["expires_at"].endswith("Z")
    assert body["scope"] == {"capabilities": [ISSUES], "proxy": [READ]}
    row = lgw.state.tokens.get(body["id"])
    assert row is not None and body["token"] not in repr(row)
