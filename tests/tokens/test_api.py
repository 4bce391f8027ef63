"""`POST/GET/DELETE /v1/tokens` and using a derived token, end to end over HTTP."""

from __future__ import annotations

from typing import Any

from tests.conftest import assert_error
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


async def test_derived_token_does_only_what_its_scope_allows(lgw: LeaseGateway) -> None:
    token, _ = await lgw.minted(lgw.tokens["alice"], {"capabilities": [ISSUES], "proxy": [READ]})
    assert (await lgw.call("GET", "/v1/proxy/gitea/api/v1/repos/me/turret/x", token)).status == 200
    for target in ("/v1/proxy/gitea/api/v1/repos/me/other", "/v1/proxy/gitea/api/v1/user"):
        await assert_error(await lgw.call("GET", target, token), 403, "forbidden")
    await assert_error(
        await lgw.call("POST", "/v1/proxy/gitea/api/v1/repos/me/turret/x", token), 403, "forbidden"
    )
    call = "/v1/capabilities/gitea.create_issue"
    ok = await lgw.call("POST", call, token, json={"repo": "turret", "title": "t"})
    assert ok.status == 200, await ok.text()
    for params in ({"repo": "other", "title": "t"}, {"repo": "turret", "title": "x" * 90}):
        await assert_error(await lgw.call("POST", call, token, json=params), 403, "forbidden")
    # The agent's own token is not narrowed by what it minted.
    assert (await lgw.call("GET", "/v1/proxy/gitea/api/v1/user", lgw.tokens["alice"])).status == 200


async def test_empty_scope_token_can_do_nothing_but_whoami(lgw: LeaseGateway) -> None:
    token, token_id = await lgw.minted(lgw.tokens["alice"], {})
    user = "/v1/proxy/gitea/api/v1/user"
    await assert_error(await lgw.call("GET", user, token), 403, "forbidden")
    call = "/v1/capabilities/gitea.read_user"
    await assert_error(await lgw.call("POST", call, token, json={}), 403, "forbidden")
    who = await (await lgw.call("GET", "/v1/whoami", token)).json()
    assert who["agent"] == "alice" and who["token"]["id"] == token_id
    assert who["token"]["scope"] == {"capabilities": [], "proxy": []}


async def test_whoami_shows_token_parent_expiry_uses_left(lgw: LeaseGateway) -> None:
    parent, parent_id = await lgw.minted(lgw.tokens["alice"], {"may_derive": True, "proxy": [READ]})
    child, child_id = await lgw.minted(parent, {"max_uses": 5, "ttl": "10m", "proxy": [READ]})
    resp = await lgw.call("GET", "/v1/whoami", child)
    who = (await resp.json())["token"]
    assert who["id"] == child_id and who["parent"] == parent_id
    assert who["uses"] == 1 and who["uses_left"] == 4 and who["may_derive"] is False
    assert who["chain"] == [parent_id, child_id]
    assert who["expires_at"].endswith("Z")
    assert "token" not in await (await lgw.call("GET", "/v1/whoami", lgw.tokens["alice"])).json()


SCOPE_EXCEEDS: list[tuple[dict[str, Any], str]] = [
    ({"capabilities": ["gitea.*"]}, "capabilities[0].name"),
    ({"capabilities": [{"name": "gitea.create_issue",
                        "params": {"repo": {"one_of": ["turret", "elsewhere"]},
                                   "title": {"max_length": 10}}}]}, "capabilities[0].params.repo"),
    ({"capabilities": [{"name": "gitea.create_issue", "params": {"repo": {"one_of": ["turret"]}}}]},
     "capabilities[0].params.title"),
    ({"capabilities": [{"name": "gitea.create_issue",
                        "params": {"repo": {"pattern": "[a-z]+"}, "title": {"max_length": 10}}}]},
     "capabilities[0].params.repo"),
    ({"capabilities": [{"name": "gitea.create_issue",
                        "params": {"repo": {"one_of": ["turret"]},
                                   "title": {"max_length": 101}}}]},
     "capabilities[0].params.title"),
    ({"proxy": [{"service": "gitea", "methods": ["DELETE"], "paths": ["/api/v1/user"]}]},
     "proxy[0].methods[0]"),
    ({"proxy": [{"service": "gitea", "methods": ["GET"], "paths": ["/api/v1/repos/you/**"]}]},
     "proxy[0].paths[0]"),
    ({"proxy": [{"service": "gitea", "methods": ["GET"], "paths": ["/api/v1/**"]}]},
     "proxy[0].paths[0]"),
    ({"proxy": [{"service": "gitea", "methods": ["GET"], "paths": ["/api/v1/*"]}]},
     "proxy[0].paths[0]"),
    ({"proxy": [{"service": "gitea", "methods": ["GET"], "paths": ["/api/v1/user", "/**"]}]},
     "proxy[0].paths[1]"),
    ({"proxy": [{"service": "q", "methods": ["GET"], "paths": ["/x"]}]}, "proxy[0].service"),
    ({"proxy": [{"service": "apikey", "methods": ["GET", "POST"], "paths": ["/reflect"]}]},
     "proxy[0].methods[1]"),
]


async def test_mint_refuses_scope_exceeding_the_agent(lgw: LeaseGateway) -> None:
    for body, part in SCOPE_EXCEEDS:
        resp = await lgw.mint(lgw.tokens["alice"], body)
        message = (await resp.json())["error"]["message"]
        assert resp.status == 403, (body, message)
        await assert_error(resp, 403, "scope_exceeds_parent")
        assert message.startswith(part + " "), (body, message)


async def test_mint_accepts_what_the_agent_covers(lgw: LeaseGateway) -> None:
    inside: list[dict[str, Any]] = [
        {"proxy": [{"service": "gitea", "methods": ["GET"], "paths": ["/api/v1/repos/me/*/x"]}]},
        {"proxy": [{"service": "gitea", "methods": ["POST"], "paths": ["/api/v1/repos/me/a/**"]}]},
        {"proxy": [{"service": "gitea", "methods": ["GET"], "paths": ["/api/v1/repos/me/**"]}]},
        {"capabilities": ["gitea.read_user"]},
        {"capabilities": [{"name": "gitea.create_issue",
                           "params": {"repo": {"one_of": ["other"]}, "title": {"max_length": 5}}}]},
    ]
    for body in inside:
        await lgw.minted(lgw.tokens["alice"], body)


async def test_child_cannot_exceed_its_parent_token_though_the_agent_could(
    lgw: LeaseGateway,
) -> None:
    parent, _ = await lgw.minted(lgw.tokens["alice"], {"may_derive": True, "proxy": [READ]})
    wider = {"service": "gitea", "methods": ["GET"], "paths": ["/api/v1/repos/me/**"]}
    resp = await lgw.mint(parent, {"proxy": [wider]})
    await assert_error(resp, 403, "scope_exceeds_parent")
    resp = await lgw.mint(parent, {"capabilities": ["gitea.read_user"]})
    await assert_error(resp, 403, "scope_exceeds_parent")
    await lgw.minted(parent, {"proxy": [{**READ, "paths": ["/api/v1/repos/me/turret/issues"]}]})
