"""`turret tokens [--agent A]` and `turret tokens revoke ID` against a running Turret, and the
configured tokens' `expires` in `turret agents`: output, `--json`, exit status, audit, no token
value (nor its digest) in any output."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.admin.conftest import Served
from turret.admin_client.control import render_tokens

USER = "/v1/proxy/gitea/api/v1/user"
READ_USER = {"proxy": [{"service": "gitea", "methods": ["GET"], "paths": ["/api/v1/user"]}]}


async def mint(served: Served, token: str, body: dict[str, Any]) -> dict[str, Any]:
    """Mint a derived token as an agent; the new token joins the leak check (it is shown once,
    in this answer, which is therefore not kept with the others)."""
    async with (
        aiohttp.ClientSession(connector=aiohttp.UnixConnector(served.agents_unix)) as session,
        session.post(
            "http://turret/v1/tokens", json=body, headers={"Authorization": f"Bearer {token}"}
        ) as resp,
    ):
        doc: dict[str, Any] = await resp.json()
    assert resp.status == 201, doc
    served.creds.tokens.append(doc["token"])
    return doc


async def three_tokens(served: Served) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """opencode's token, a child of it, and one of `other`."""
    root = await mint(
        served, served.token, {**READ_USER, "may_derive": True, "description": "triage"}
    )
    child = await mint(served, root["token"], {**READ_USER, "max_uses": 3})
    other = await mint(served, served.other_token, {"ttl": "5m"})
    return root, child, other


def assert_no_digests(text: str, *docs: dict[str, Any]) -> None:
    for doc in docs:
        assert doc["token"] not in text
        assert hashlib.sha256(doc["token"].encode()).hexdigest() not in text


async def test_tokens_lists_every_derived_token_never_a_value(served: Served) -> None:
    root, child, other = await three_tokens(served)
    code, out, err = await served.cli("tokens")
    assert code == 0 and not err
    lines = out.splitlines()
    assert lines[0].split()[:4] == ["ID", "AGENT", "PARENT", "STATE"]
    by_id = {line.split()[0]: line for line in lines[1:]}
    assert set(by_id) == {root["id"], child["id"], other["id"]}
    assert f"opencode  {root['id']}" in by_id[child["id"]] and "0/3" in by_id[child["id"]]
    assert "in force" in by_id[root["id"]] and "gitea GET /api/v1/user" in by_id[root["id"]]
    assert by_id[root["id"]].endswith("triage") and "nothing" in by_id[other["id"]]
    code, out, _ = await served.cli("tokens", "--agent", "opencode", "--json")
    docs = json.loads(out)["tokens"]
    assert code == 0 and [t["id"] for t in docs] == [root["id"], child["id"]]
    expected = {
        "agent": "opencode", "parent": root["id"], "uses": 0, "max_uses": 3, "revoked": False,
        "in_force": True, "scope_summary": "gitea GET /api/v1/user", "description": "",
        "expires_at": child["expires_at"], "scope": child["scope"],
    }  # fmt: skip
    assert {key: docs[1][key] for key in expected} == expected and "created" in docs[1]
    code, out, _ = await served.cli("tokens", "--agent", "other")
    assert code == 0 and other["id"] in out and root["id"] not in out
    assert_no_digests("\n".join(served.seen), root, child, other)


async def test_tokens_revoke_revokes_the_tree_audited_with_the_operators_uid(
    served: Served,
) -> None:
    root, child, other = await three_tokens(served)
    assert (await served.agent(USER, token=child["token"]))[0] == 200
    code, out, err = await served.cli("tokens", "revoke", root["id"])
    assert code == 0 and not err
    assert out.strip() == f"revoked 2 tokens: {root['id']}, {child['id']}"
    for token in (root["token"], child["token"]):
        status, doc = await served.agent(USER, token=token)
        assert status == 401 and doc["error"]["code"] == "revoked"
    assert (await served.agent("/v1/whoami", token=other["token"]))[0] == 200
    assert (await served.agent(USER))[0] == 200  # the agent's own token is untouched
    uid = f"uid:{os.getuid()}"
    records = [r for r in served.audit() if r.get("TURRET_EVENT") == "token_revoked"]
    assert [(r["TURRET_TOKEN_ID"], r["TURRET_REVOKED_BY"]) for r in records] == [
        (root["id"], uid), (child["id"], "parent"),
    ]  # fmt: skip
    assert all(r["TURRET_AGENT"] == "opencode" for r in records)
    (action,) = [r for r in served.audit() if r.get("TURRET_EVENT") == "admin_action"]
    assert action["TURRET_ACTION"] == f"revoke token {root['id']}"
    assert action["TURRET_OPERATOR_UID"] == str(os.getuid())
    code, out, _ = await served.cli("tokens", "revoke", child["id"], "--json")
    assert code == 0 and json.loads(out)["revoked"] == []  # already revoked: nothing new
    code, out, _ = await served.cli("tokens", "--json")
    states = {t["id"]: (t["revoked"], t["in_force"]) for t in json.loads(out)["tokens"]}
    assert states == {
        root["id"]: (True, False), child["id"]: (True, False), other["id"]: (False, True)
    }
    code, out, _ = await served.cli("tokens")
    assert sum(" revoked " in line for line in out.splitlines()) == 2
    assert_no_digests("\n".join(served.seen), root, child, other)


async def test_tokens_revoke_agent_and_killswitch_show_in_the_listing(served: Served) -> None:
    root, child, _ = await three_tokens(served)
    assert (await served.cli("revoke", "opencode"))[0] == 0
    _, out, _ = await served.cli("tokens", "--json")
    revoked = {t["id"] for t in json.loads(out)["tokens"] if t["revoked"]}
    assert revoked == {root["id"], child["id"]}
    assert (await served.cli("killswitch"))[0] == 0
    _, out, _ = await served.cli("tokens", "--json")
    assert all(t["revoked"] for t in json.loads(out)["tokens"])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["tokens", "revoke", "tok_0123456789abcdef"], "no derived token 'tok_0123456789abcdef'"),
        (["tokens", "revoke", "tok_0123"], "a token id must match"),
        (["tokens", "revoke", "TOK_0123456789ABCDEF"], "a token id must match"),
        (["tokens", "revoke", "../../seal"], "a token id must match"),
        (["tokens", "revoke", "%2e%2e"], "a token id must match"),
        (["tokens", "--agent", "nobody"], "no agent 'nobody' in the configuration"),
        (["tokens", "--agent", "bad name"], "agent name must match"),
        (["tokens", "--agent", "../seal"], "agent name must match"),
    ],
)
async def test_tokens_failure_exits_1_with_turrets_message(
    served: Served, args: list[str], message: str
) -> None:
    root = await mint(served, served.token, READ_USER)
    code, out, err = await served.cli(*args)
    assert code == 1 and message in err and not out
    code, out, _ = await served.cli(*args, "--json")
    assert code == 1 and json.loads(out)["ok"] is False
    assert (await served.agent(USER, token=root["token"]))[0] == 200
    _, doc = await served.admin("GET", "/v1/admin/status")
    assert doc["sealed"] is None and doc["agents"]["revoked"] == []


@pytest.mark.parametrize(
    "args",
    [
        ["tokens", "revoke"],
        ["tokens", "frob"],
        ["tokens", "tok_0123456789abcdef"],
        ["tokens", "revoke", "tok_0123456789abcdef", "--agent", "opencode"],
        ["tokens", "revoke", "a", "b"],
    ],
)
async def test_tokens_usage_error_exits_2(served: Served, args: list[str]) -> None:
    code, out, _ = await served.cli(*args)
    assert code == 2 and not out


async def test_tokens_without_a_state_store_exit_1(served: Served) -> None:
    await served.stop()
    served.options = dataclasses.replace(served.options, state_dir=None)
    await served.start()
    code, _, err = await served.cli("tokens")
    assert code == 1 and "no state store" in err


def set_expires(config: Path) -> None:
    """opencode's token expired in 2021 (a time with an offset), other's ends in 2099 (a date)."""
    text = config.read_text().replace("  other:\n", "  other:\n    expires: 2099-01-31\n")
    text = text.replace("  opencode:\n", "  opencode:\n    expires: 2021-06-01T12:00:00+02:00\n")
    config.write_text(text)


async def test_agents_reports_a_configured_tokens_expiry(served: Served) -> None:
    await served.stop()
    set_expires(Path(served.options.config_path))
    await served.start()
    code, out, _ = await served.cli("agents")
    rows = {line.split()[0]: line for line in out.splitlines()[1:]}
    assert code == 0 and "TOKEN EXPIRES" in out.splitlines()[0]
    assert "expired 2021-06-01T10:00:00Z" in rows["opencode"]
    assert " 2099-01-31T00:00:00Z " in rows["other"] and "expired" not in rows["other"]
    _, out, _ = await served.cli("agents", "--json")
    docs = {a["agent"]: a for a in json.loads(out)["agents"]}
    assert (docs["opencode"]["expires"], docs["opencode"]["expired"]) == (
        "2021-06-01T10:00:00Z", True,
    )  # fmt: skip
    assert (docs["other"]["expires"], docs["other"]["expired"]) == ("2099-01-31T00:00:00Z", False)


def test_render_tokens_names_each_state() -> None:
    base: dict[str, object] = {
        "id": "tok_0123456789abcdef", "agent": "a", "parent": None, "revoked": False,
        "in_force": True, "expires_at": "2030-01-01T00:00:00Z", "uses": 1, "max_uses": None,
        "created": "2029-12-31T23:00:00Z", "scope_summary": "nothing", "description": None,
    }  # fmt: skip
    cases: list[tuple[dict[str, object], str]] = [
        ({}, "in force"),
        ({"revoked": True, "in_force": False}, "revoked"),
        ({"in_force": False, "uses": 2, "max_uses": 2}, "used up"),
        ({"in_force": False, "uses": 1, "max_uses": 2}, "expired"),
        ({"in_force": False}, "expired"),
    ]
    for change, state in cases:
        assert f"  {state}  " in render_tokens([base | change]).splitlines()[1]
    assert render_tokens([]) == "no derived tokens"
