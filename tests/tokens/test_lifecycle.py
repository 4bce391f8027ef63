"""A derived token's life: refusals with their codes, expiry on an injected clock, use counting
under a burst, revocation cascading down three levels, restart and reload."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.conftest import Upstream, assert_error
from tests.gateway import Canaries
from tests.tokens.conftest import LeaseGateway, Wall, lease_config, make_lease_gateway
from turret.audit import Auditor, LineSink
from turret.config import load_config
from turret.pipeline.tokens import PRUNE_AFTER, prune_expired
from turret.providers.build import build_runtime
from turret.records import Event
from turret.state import StateStore
from turret.web.keys import CONTEXT

READ = {"service": "gitea", "methods": ["GET"], "paths": ["/api/v1/repos/me/turret/**"]}
TARGET = "/v1/proxy/gitea/api/v1/repos/me/turret/x"


@pytest.mark.parametrize(
    ("body", "status", "code", "field"),
    [
        (b"not json", 400, "bad_request", ""),
        (b"[]", 400, "bad_request", ""),
        (b'{"ttl": "1h", "ttl": "2h"}', 400, "bad_request", ""),
        (b'{"colour": "red"}', 422, "invalid_request", "unknown key"),
        (b'{"ttl": "15x"}', 422, "invalid_request", "ttl"),
        (b'{"ttl": 900}', 422, "invalid_request", "ttl"),
        (b'{"ttl": "0s"}', 422, "invalid_request", "ttl"),
        (b'{"ttl": "25h"}', 422, "invalid_request", "ttl"),
        (b'{"max_uses": 0}', 422, "invalid_request", "max_uses"),
        (b'{"max_uses": true}', 422, "invalid_request", "max_uses"),
        (b'{"may_derive": "yes"}', 422, "invalid_request", "may_derive"),
        (b'{"description": 5}', 422, "invalid_request", "description"),
        (b'{"description": "a\\nb"}', 422, "invalid_request", "description"),
        (b'{"capabilities": ["nope.none"]}', 422, "invalid_request", "capabilities[0].name"),
        (b'{"capabilities": {"a": 1}}', 422, "invalid_request", "capabilities"),
        (b'{"proxy": [{"service": "gitea", "methods": ["BREW"], "paths": ["/a"]}]}', 422,
         "invalid_request", "proxy[0].methods[0]"),
        (b'{"proxy": [{"service": "gitea", "methods": ["GET"], "paths": ["a"]}]}', 422,
         "invalid_request", "proxy[0].paths[0]"),
        (b'{"proxy": [{"service": "gitea", "methods": ["GET"]}]}', 422, "invalid_request",
         "proxy[0]"),
    ],
)
async def test_mint_bad_body_names_the_field(
    lgw: LeaseGateway, body: bytes, status: int, code: str, field: str
) -> None:
    resp = await lgw.call("POST", "/v1/tokens", lgw.tokens["alice"], data=body)
    await assert_error(resp, status, code)
    assert (await resp.json())["error"]["message"].startswith(field)


async def test_mint_ttl_over_agent_max_ttl_is_refused(lgw: LeaseGateway) -> None:
    resp = await lgw.mint(lgw.tokens["brief"], {"ttl": "11m"})
    await assert_error(resp, 422, "invalid_request")
    assert "max_ttl" in (await resp.json())["error"]["message"]
    await lgw.minted(lgw.tokens["brief"], {"ttl": "10m"})


async def test_mint_refused_when_may_derive_is_off_or_depth_reached(lgw: LeaseGateway) -> None:
    await assert_error(await lgw.mint(lgw.tokens["nod"], {}), 403, "derive_not_allowed")
    leaf, _ = await lgw.minted(lgw.tokens["alice"], {})
    await assert_error(await lgw.mint(leaf, {}), 403, "derive_not_allowed")
    token = lgw.tokens["alice"]
    for _ in range(3):
        token, _ = await lgw.minted(token, {"may_derive": True})
    await assert_error(await lgw.mint(token, {}), 403, "derive_not_allowed")


async def test_mint_without_state_store_is_503(
    upstream: Upstream, leak_check: Canaries, tmp_path: Path
) -> None:
    from tests.gateway import build_gateway  # noqa: PLC0415 - only this test builds it bare

    tokens = {n: leak_check.mint() for n in ("alice", "nod", "brief")}
    built = await build_gateway(
        lease_config(upstream.url, tokens),
        creds=leak_check,
        audit_path=tmp_path / "audit.jsonl",
        credentials_dir=leak_check.write(tmp_path / "credentials"),
    )
    headers = {"Authorization": f"Bearer {tokens['alice']}"}
    resp = await built.client.post("/v1/tokens", json={}, headers=headers)
    await assert_error(resp, 503, "unavailable")
    assert "StateDirectory=" in (await resp.json())["error"]["message"]


async def test_expiry_follows_the_wall_clock_and_the_parent(lgw: LeaseGateway) -> None:
    parent, _ = await lgw.minted(lgw.tokens["alice"], {"ttl": "10m", "may_derive": True,
                                                       "proxy": [READ]})
    child_resp = await lgw.mint(parent, {"ttl": "1h", "proxy": [READ]})
    child_body = await child_resp.json()
    parent_row = lgw.state.tokens.by_agent("alice")[0]
    assert lgw.state.tokens.get(child_body["id"]).expires == parent_row.expires  # type: ignore[union-attr]
    child = child_body["token"]
    lgw.wall.now += 599
    assert (await lgw.call("GET", TARGET, child)).status == 200
    lgw.wall.now += 1
    for token in (parent, child):
        await assert_error(await lgw.call("GET", TARGET, token), 401, "token_expired")
    assert (await lgw.call("GET", "/v1/whoami", lgw.tokens["alice"])).status == 200


async def test_configured_token_expires(
    upstream: Upstream, leak_check: Canaries, tmp_path: Path, state: StateStore
) -> None:
    extra = """\
  dated:
    token_sha256: {digest}
    expires: 2030-01-01T00:00:00Z
    proxy:
      - service: gitea
        methods: [GET]
        paths: ["/api/v1/user"]
"""
    from turret.auth import token_sha256  # noqa: PLC0415

    tokens = {n: leak_check.mint() for n in ("alice", "nod", "brief", "dated")}
    wall = Wall(1893456000.0 - 3600)  # 2030-01-01 minus an hour
    gw = await make_lease_gateway(
        upstream, leak_check, tmp_path, state=state, wall=wall, tokens=tokens,
        extra=extra.format(digest=token_sha256(tokens["dated"])),
    )
    child, _ = await gw.minted(tokens["dated"], {"ttl": "24h"})
    row = state.tokens.by_agent("dated")[0]
    assert row.expires == 1893456000.0  # never past the configured token's own end
    assert (await gw.call("GET", "/v1/whoami", tokens["dated"])).status == 200
    wall.now += 3600
    for token in (tokens["dated"], child):
        await assert_error(await gw.call("GET", "/v1/whoami", token), 401, "token_expired")


async def test_every_request_counts_allowed_or_not(lgw: LeaseGateway) -> None:
    token, token_id = await lgw.minted(lgw.tokens["alice"], {"max_uses": 3, "proxy": [READ]})
    assert (await lgw.call("GET", TARGET, token)).status == 200
    user = "/v1/proxy/gitea/api/v1/user"
    await assert_error(await lgw.call("GET", user, token), 403, "forbidden")
    assert (await lgw.call("GET", "/v1/whoami", token)).status == 200
    for _ in range(2):
        await assert_error(await lgw.call("GET", TARGET, token), 401, "token_exhausted")
    row = lgw.state.tokens.get(token_id)
    assert row is not None and row.uses == 3


async def test_no_over_use_under_a_burst(lgw: LeaseGateway) -> None:
    token, token_id = await lgw.minted(lgw.tokens["alice"], {"max_uses": 5, "proxy": [READ]})
    answers = await asyncio.gather(*(lgw.call("GET", TARGET, token) for _ in range(25)))
    statuses = sorted(r.status for r in answers)
    assert statuses == [200] * 5 + [401] * 20
    assert lgw.state.tokens.get(token_id).uses == 5  # type: ignore[union-attr]


async def test_revocation_cascades_over_three_levels(lgw: LeaseGateway) -> None:
    a, a_id = await lgw.minted(lgw.tokens["alice"], {"may_derive": True, "proxy": [READ]})
    b, b_id = await lgw.minted(a, {"may_derive": True, "proxy": [READ]})
    c, c_id = await lgw.minted(b, {"proxy": [READ]})
    sibling, sibling_id = await lgw.minted(lgw.tokens["alice"], {"proxy": [READ]})
    # A token sees and revokes only its own descendants.
    listed = await (await lgw.call("GET", "/v1/tokens", a)).json()
    assert [t["id"] for t in listed["tokens"]] == [b_id, c_id]
    await assert_error(await lgw.call("DELETE", f"/v1/tokens/{sibling_id}", a), 404, "not_found")
    resp = await lgw.call("DELETE", f"/v1/tokens/{b_id}", a)
    assert (await resp.json()) == {"ok": True, "revoked": [b_id, c_id]}
    assert (await lgw.call("GET", TARGET, a)).status == 200
    for token in (b, c):
        await assert_error(await lgw.call("GET", TARGET, token), 401, "revoked")
    resp = await lgw.call("DELETE", f"/v1/tokens/{a_id}", lgw.tokens["alice"])
    assert (await resp.json())["revoked"] == [a_id]
    await assert_error(await lgw.call("GET", TARGET, a), 401, "revoked")
    assert (await lgw.call("GET", TARGET, sibling)).status == 200
    revoked = [r for r in lgw.audit() if r["MESSAGE_ID"] == Event.TOKEN_REVOKED.value]
    assert [(r["TURRET_TOKEN_ID"], r["TURRET_REVOKED_BY"]) for r in revoked] == [
        (b_id, f"agent:alice token:{a_id}"), (c_id, "parent"), (a_id, "agent:alice"),
    ]


async def test_listing_never_shows_a_token_value(lgw: LeaseGateway) -> None:
    token, token_id = await lgw.minted(lgw.tokens["alice"], {"description": "triage"})
    resp = await lgw.call("GET", "/v1/tokens", lgw.tokens["alice"])
    text = await resp.text()
    assert token not in text and token_id in text
    listed = (await resp.json())["tokens"][0]
    assert listed["description"] == "triage" and listed["uses"] == 0


async def test_derived_tokens_survive_a_restart(
    upstream: Upstream, leak_check: Canaries, tmp_path: Path
) -> None:
    directory = tmp_path / "state"
    directory.mkdir(mode=0o700)
    store = StateStore.open(directory)
    first = await make_lease_gateway(upstream, leak_check, tmp_path, state=store)
    token, _ = await first.minted(first.tokens["alice"], {"proxy": [READ], "max_uses": 2})
    assert (await first.call("GET", TARGET, token)).status == 200
    await first.client.close()
    store.close()
    again = StateStore.open(directory)
    (tmp_path / "again").mkdir()
    second = await make_lease_gateway(
        upstream, leak_check, tmp_path / "again", state=again, tokens=first.tokens
    )
    try:
        assert (await second.call("GET", TARGET, token)).status == 200
        await assert_error(await second.call("GET", TARGET, token), 401, "token_exhausted")
    finally:
        await second.client.close()
        again.close()


async def test_reload_narrowing_the_agent_narrows_its_derived_tokens(lgw: LeaseGateway) -> None:
    token, _ = await lgw.minted(lgw.tokens["alice"], {"proxy": [READ]})
    assert (await lgw.call("GET", TARGET, token)).status == 200
    narrowed = lease_config(lgw.upstream.url, lgw.tokens).replace(
        '"/api/v1/repos/me/**"', '"/api/v1/repos/me/other/**"'
    )
    holder = lgw.client.app[CONTEXT].holder
    creds = str(lgw.audit_path.parent / "credentials")
    holder.current = build_runtime(load_config(narrowed), creds)
    await assert_error(await lgw.call("GET", TARGET, token), 403, "forbidden")
    removed = lease_config(lgw.upstream.url, lgw.tokens).replace("  alice:", "  alicia:")
    holder.current = build_runtime(load_config(removed), creds)
    await assert_error(await lgw.call("GET", TARGET, token), 401, "unauthorized")


async def test_audit_records_mint_and_every_decision_with_the_chain(lgw: LeaseGateway) -> None:
    a, a_id = await lgw.minted(lgw.tokens["alice"], {"may_derive": True, "proxy": [READ]})
    b, b_id = await lgw.minted(a, {"proxy": [READ], "max_uses": 4})
    await lgw.call("GET", TARGET, b)
    await lgw.call("GET", "/v1/proxy/gitea/api/v1/user", b)
    records = lgw.audit()
    minted = [r for r in records if r["MESSAGE_ID"] == Event.TOKEN_MINTED.value]
    chain = [(r["TURRET_TOKEN_ID"], r["TURRET_PARENT"]) for r in minted]
    assert chain == [(a_id, "-"), (b_id, a_id)]
    assert minted[1]["TURRET_EXPIRES"].endswith("Z") and "gitea GET" in minted[1]["TURRET_SCOPE"]
    decisions = [r for r in records if r["MESSAGE_ID"] == Event.DECISION.value][-2:]
    assert [d["TURRET_DECISION"] for d in decisions] == ["allow", "deny"]
    for d in decisions:
        assert d["TURRET_TOKEN_ID"] == b_id and d["TURRET_TOKEN_CHAIN"] == f"{a_id},{b_id}"
        assert d["TURRET_AGENT"] == "alice"


async def test_derived_token_in_a_request_is_refused_by_the_exfiltration_guard(
    lgw: LeaseGateway,
) -> None:
    token, _ = await lgw.minted(lgw.tokens["alice"], {"proxy": [READ]})
    for data in (token, token[::-1][:0] + token.encode().hex()):
        resp = await lgw.call(
            "POST", "/v1/proxy/gitea/api/v1/repos/me/turret/x", lgw.tokens["alice"], data=data
        )
        await assert_error(resp, 403, "credential_in_request")


async def test_unknown_token_shaped_value_is_unauthorized(lgw: LeaseGateway) -> None:
    fake = "turret_" + "A" * 43
    await assert_error(await lgw.call("GET", "/v1/whoami", fake), 401, "unauthorized")


async def test_expired_tokens_are_pruned_a_day_later_and_recorded(lgw: LeaseGateway) -> None:
    token, token_id = await lgw.minted(lgw.tokens["alice"], {"ttl": "1m"})
    ctx = lgw.client.app[CONTEXT]
    lgw.wall.now += 60 + PRUNE_AFTER - 1
    assert await prune_expired(ctx) == []
    await assert_error(await lgw.call("GET", "/v1/whoami", token), 401, "token_expired")
    lgw.wall.now += 2
    assert await prune_expired(ctx) == [token_id]
    assert lgw.state.tokens.get(token_id) is None
    expired = [r for r in lgw.audit() if r["MESSAGE_ID"] == Event.TOKEN_EXPIRED.value]
    assert [r["TURRET_TOKEN_ID"] for r in expired] == [token_id]
    await assert_error(await lgw.call("GET", "/v1/whoami", token), 401, "unauthorized")


async def test_refused_derived_tokens_are_charged_to_the_flood_gate(
    upstream: Upstream, leak_check: Canaries, tmp_path: Path, state: StateStore
) -> None:
    extra = "limits:\n  unauthenticated: {requests_per_second: 0.01, burst: 3}\n"
    gw = await make_lease_gateway(upstream, leak_check, tmp_path, state=state)
    config = lease_config(upstream.url, gw.tokens) + extra
    gw.client.app[CONTEXT].holder.current = build_runtime(
        load_config(config), str(tmp_path / "credentials")
    )
    token, token_id = await gw.minted(gw.tokens["alice"], {})
    await gw.call("DELETE", f"/v1/tokens/{token_id}", gw.tokens["alice"])
    statuses = [(await gw.call("GET", "/v1/whoami", token)).status for _ in range(5)]
    assert statuses == [401, 401, 401, 429, 429]


async def test_mint_body_carrying_a_secret_is_refused_and_not_stored(lgw: LeaseGateway) -> None:
    secret = lgw.canaries["gitea-token"]
    for body in (
        {"description": secret},
        {"description": lgw.tokens["nod"]},
        {"capabilities": [{"name": "gitea.create_issue",
                           "params": {"repo": {"one_of": ["turret"]},
                                      "title": {"one_of": [secret.encode().hex()]}}}]},
    ):
        await assert_error(await lgw.mint(lgw.tokens["alice"], body), 403, "credential_in_request")
    assert lgw.state.tokens.by_agent("alice") == []


async def test_requests_to_no_endpoint_count_too(lgw: LeaseGateway) -> None:
    token, token_id = await lgw.minted(lgw.tokens["alice"], {"max_uses": 2})
    await assert_error(await lgw.call("GET", "/v1/nothing", token), 404, "not_found")
    await assert_error(await lgw.call("PUT", "/v1/whoami", token), 405, "method_not_allowed")
    assert lgw.state.tokens.get(token_id).uses == 2  # type: ignore[union-attr]
    await assert_error(await lgw.call("GET", "/v1/whoami", token), 401, "token_exhausted")


async def test_derived_tokens_share_their_agent_rate_limit(
    upstream: Upstream, leak_check: Canaries, tmp_path: Path, state: StateStore
) -> None:
    from turret.auth import token_sha256  # noqa: PLC0415

    tokens = {n: leak_check.mint() for n in ("alice", "nod", "brief", "lim")}
    extra = f"""\
  lim:
    token_sha256: {token_sha256(tokens["lim"])}
    limits: {{requests_per_second: 0.01, burst: 3}}
"""
    gw = await make_lease_gateway(
        upstream, leak_check, tmp_path, state=state, tokens=tokens, extra=extra
    )
    child, _ = await gw.minted(tokens["lim"], {})  # 1
    assert (await gw.call("GET", "/v1/whoami", child)).status == 200  # 2
    assert (await gw.call("GET", "/v1/whoami", tokens["lim"])).status == 200  # 3
    for token in (child, tokens["lim"]):
        await assert_error(await gw.call("GET", "/v1/whoami", token), 429, "rate_limited")


class _LosesMintDecisions(LineSink):
    """The audit file, except that the record allowing a mint is lost."""

    def write(self, message: str, fields: dict[str, str]) -> None:
        if fields.get("TURRET_DECISION") == "allow" and "minted" in message:
            raise OSError("disk full")
        super().write(message, fields)


async def test_mint_whose_decision_record_is_lost_mints_nothing(
    upstream: Upstream, leak_check: Canaries, tmp_path: Path, state: StateStore
) -> None:
    auditor = Auditor(_LosesMintDecisions.open(str(tmp_path / "audit.jsonl")))
    gw = await make_lease_gateway(upstream, leak_check, tmp_path, state=state, auditor=auditor)
    await assert_error(await gw.mint(gw.tokens["alice"], {}), 503, "unavailable")
    assert state.tokens.by_agent("alice") == []
