"""The capability API end to end: listing, calling, policy, strict input, explain, audit."""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

import pytest
from yarl import URL

from tests.capabilities.conftest import V12_ROOM, CapGateway, make_capability_gateway
from tests.conftest import assert_error
from tests.gateway import Canaries

ROOM = "!ops:example.org"


async def _listing(capgw: CapGateway, agent: str) -> dict[str, Any]:
    resp = await capgw.client.get("/v1/capabilities", headers=capgw.auth(agent))
    assert resp.status == 200
    body = await resp.json()
    return {c["name"]: c for c in body["capabilities"]}


async def test_list_shows_granted_capabilities_with_narrowed_schemas(capgw: CapGateway) -> None:
    listed = await _listing(capgw, "opencode")
    assert sorted(listed) == [
        "chat.read_messages",
        "chat.send_message",
        "git.close_issue",
        "git.comment",
        "git.create_issue",
        "home.call_service",
        "push.publish",
        "pve.pct_status",
        "pve.qemu_status",
        "qbit.list_torrents",  # qbit.add_torrent is denied
    ]
    send = listed["chat.send_message"]
    assert send["description"] and send["service"] == "chat"
    schema = send["parameters"]
    assert schema["type"] == "object" and schema["additionalProperties"] is False
    assert schema["required"] == ["room_id", "body"]
    assert schema["properties"]["room_id"]["enum"] == [ROOM, V12_ROOM]
    assert schema["properties"]["body"] == {
        "type": "string",
        "description": "The message text",
        "maxLength": 2000,
    }
    pct = listed["pve.pct_status"]["parameters"]
    assert pct["required"] == ["ctid"]  # node has the service's default
    assert pct["properties"]["node"]["default"] == "pve1"
    domain = listed["home.call_service"]["parameters"]["properties"]["domain"]
    assert domain["enum"] == ["light", "switch"]


async def test_list_for_a_group_member_and_for_nobody(capgw: CapGateway) -> None:
    listed = await _listing(capgw, "ops/alice")
    assert sorted(listed) == ["pve.pct_status", "qbit.add_torrent", "qbit.list_torrents"]
    category = listed["qbit.add_torrent"]["parameters"]["properties"]["category"]
    assert category["enum"] == ["linux-isos"]
    ctid = listed["pve.pct_status"]["parameters"]["properties"]["ctid"]
    assert (ctid["minimum"], ctid["maximum"]) == (100, 199)
    assert await _listing(capgw, "nobody") == {}


async def test_list_needs_a_token(capgw: CapGateway) -> None:
    resp = await capgw.client.get("/v1/capabilities")
    await assert_error(resp, 401, "unauthorized")


@pytest.mark.parametrize(
    ("agent", "name", "params", "rule", "reason"),
    [
        (
            "opencode",
            "chat.send_message",
            {"room_id": "!other:example.org", "body": "x"},
            "agents.opencode.capabilities[0]",
            "params.room_id is not one of the allowed values",
        ),
        (
            "opencode",
            "chat.send_message",
            {"room_id": ROOM, "body": "x" * 2001},
            "agents.opencode.capabilities[0]",
            "params.body is longer than 2000",
        ),
        (
            "opencode",
            "qbit.add_torrent",
            {"magnet": "magnet:?xt=urn:btih:" + "b" * 40},
            "agents.opencode.deny[0]",
            "qbit.add_torrent is denied",
        ),
        (
            "ops/alice",
            "qbit.list_torrents",
            {"category": "movies"},
            "groups.ops.capabilities[0]",
            "params.category is not one of the allowed values",
        ),
        (
            "ops/alice",
            "qbit.list_torrents",
            {},
            "groups.ops.capabilities[0]",
            "params.category is required by the grant",
        ),
        ("ops/alice", "pve.pct_status", {"ctid": 300}, "groups.ops.capabilities[1]", "more than"),
        ("nobody", "pve.pct_status", {"ctid": 101}, None, "no grant allows pve.pct_status"),
    ],
)
async def test_call_denied_by_policy_is_403_and_audited(  # noqa: PLR0917 - pytest parameters
    capgw: CapGateway,
    agent: str,
    name: str,
    params: dict[str, Any],
    rule: str | None,
    reason: str,
) -> None:
    resp = await capgw.call(name, params, agent=agent)
    assert resp.status == 403
    error = (await resp.json())["error"]
    assert error["code"] == "forbidden" and reason in error["message"]
    assert capgw.fakes.seen == []
    (record,) = capgw.audit()
    assert record["TURRET_DECISION"] == "deny" and record["TURRET_CAPABILITY"] == name
    assert record.get("TURRET_RULE") == rule
    assert reason in record["TURRET_REASON"]


async def test_report_mode_allows_and_records_would_deny(capgw: CapGateway) -> None:
    resp = await capgw.call("chat.read_messages", {"room_id": ROOM}, agent="rollout")
    assert resp.status == 200
    decision, outcome = capgw.audit()
    assert decision["TURRET_DECISION"] == "allow"
    assert decision["TURRET_REPORT"] == "would-deny"
    assert (
        decision["TURRET_REASON"] == "report mode, would deny: no grant allows chat.read_messages"
    )
    assert outcome["TURRET_EVENT"] == "outcome" and outcome["TURRET_STATUS"] == "200"
    granted = await capgw.call("chat.send_message", {"room_id": ROOM, "body": "x"}, agent="rollout")
    assert granted.status == 200
    assert "TURRET_REPORT" not in capgw.audit()[2]


async def test_report_mode_still_enforces_explicit_deny(capgw: CapGateway) -> None:
    resp = await capgw.call("pve.pct_status", {"ctid": 101}, agent="rollout")
    assert resp.status == 403
    (decision,) = capgw.audit()
    assert decision["TURRET_DECISION"] == "deny" and "TURRET_REPORT" not in decision
    assert capgw.fakes.seen == []


_OK = {"ctid": 101}


@pytest.mark.parametrize(
    ("raw", "status", "named"),
    [
        (b'{"ctid": 101, "ctid": 102}', 400, "duplicate key"),
        (b'{"ctid": NaN}', 400, "NaN"),
        (b'{"ctid": Infinity}', 400, "Infinity"),
        (b'{"ctid": -Infinity}', 400, "Infinity"),
        (b'{"ctid": 1e999}', 400, "out of range"),
        ('{"ctid": \uff11\uff10\uff11}'.encode(), 400, "not valid JSON"),
        (b'{"ctid": "101"}', 422, "params.ctid: must be an integer, not a string"),
        (b'{"ctid": true}', 422, "params.ctid: must be an integer, not a boolean"),
        (b'{"ctid": 101.0}', 422, "params.ctid: must be an integer, not a fraction"),
        (b'{"ctid": null}', 422, "params.ctid: must be an integer, not null"),
        (b'{"ctid": [101]}', 422, "params.ctid: must be an integer, not an object or list"),
        (b'{"ctid": 99}', 422, "params.ctid: is less than 100"),
        (
            '{"ctid": 101, "node": "\uff50\uff56\uff45\uff11"}'.encode(),
            422,
            "params.node: must not contain compat",
        ),
        (b'{"ctid": 101, "node": "pve1\\r\\nX: y"}', 422, "params.node: must not contain CR, LF"),
        (b'{"ctid": 101, "node": "pve\\u0000"}', 422, "params.node: must not contain CR, LF"),
        (b'{"ctid": 101, "node": "pve/../x"}', 422, "params.node: does not match"),
        (b'{"Ctid": 101}', 422, "params: unknown parameter name; pve.pct_status takes ctid"),
        (b'{"c\\u0074id\\u2028": 101}', 422, "unknown parameter name"),
        (b'{"ctid": 101, "extra": 1}', 422, "params: unknown parameter name"),
        (b"{}", 422, "params.ctid: is required"),
        (b"[]", 400, "must be a JSON object"),
        (b"", 400, "not valid JSON"),
        (b'{"ctid": 101', 400, "not valid JSON"),
        (b'\xff{"ctid": 101}', 400, "not valid UTF-8"),
        (b'{"ctid": 1' + b"0" * 40 + b"}", 400, "at most 32"),
    ],
)
async def test_call_rejects_malformed_input_naming_the_parameter(
    capgw: CapGateway, raw: bytes, status: int, named: str
) -> None:
    resp = await capgw.call("pve.pct_status", raw=raw)
    assert resp.status == status, await resp.text()
    error = (await resp.json())["error"]
    assert error["code"] == ("bad_request" if status == 400 else "invalid_params")
    assert named in error["message"]
    assert capgw.fakes.seen == []
    (record,) = capgw.audit()
    assert record["TURRET_DECISION"] == "deny" and record["TURRET_STATUS"] == str(status)


@pytest.mark.parametrize(
    ("name", "params", "named"),
    [
        # CR/LF in a value that lands in a query string or a form field.
        ("qbit.list_torrents", {"category": "linux\r\nisos"}, "params.category"),
        ("qbit.add_torrent", {"magnet": "magnet:?xt=urn:btih:" + "a" * 40 + "\n"}, "params.magnet"),
        # Path segments: a value is one segment, whatever it contains.
        ("git.create_issue", {"repo": "me/..", "title": "t"}, "params.repo"),
        ("git.create_issue", {"repo": "me/a/b", "title": "t"}, "params.repo"),
    ],
)
async def test_call_refuses_values_unsafe_where_they_land(
    capgw: CapGateway, name: str, params: dict[str, Any], named: str
) -> None:
    resp = await capgw.call(name, params, agent="ops/alice" if "qbit" in name else "opencode")
    assert resp.status == 422, await resp.text()
    assert (await resp.json())["error"]["message"].startswith(named)
    assert capgw.fakes.seen == []


async def test_user_capability_path_parameter_cannot_escape_its_segment(
    capgw: CapGateway,
) -> None:
    # git.close_issue's repo pattern allows no "/", but a template value is one segment anyway.
    resp = await capgw.call("git.close_issue", {"repo": "notes%2f..", "index": 1})
    assert resp.status == 422
    assert capgw.fakes.seen == []


@pytest.mark.parametrize(
    ("target", "status"),
    [
        ("/v1/capabilities/chat%2Esend_message", 400),
        ("/v1/capabilities/Chat.send_message", 400),
        ("/v1/capabilities/chat.nothing", 404),
    ],
)
async def test_call_capability_name_is_checked_raw(
    capgw: CapGateway, target: str, status: int
) -> None:
    url = URL(str(capgw.client.make_url("")).rstrip("/") + target, encoded=True)
    resp = await capgw.client.session.post(url, data=b"{}", headers=capgw.auth())
    assert resp.status == status
    assert capgw.fakes.seen == []


async def test_call_needs_a_token_and_post(capgw: CapGateway) -> None:
    resp = await capgw.client.post("/v1/capabilities/pve.pct_status", data=b'{"ctid": 101}')
    assert resp.status == 401
    resp = await capgw.client.get("/v1/capabilities/pve.pct_status", headers=capgw.auth())
    assert resp.status == 405
    assert capgw.fakes.seen == []


async def test_audit_has_capability_and_keyed_hash_never_values(capgw: CapGateway) -> None:
    params = {"room_id": ROOM, "body": "the launch code is 0000"}
    assert (await capgw.call("chat.send_message", params)).status == 200
    assert (await capgw.call("chat.send_message", params)).status == 200
    first, _, second, _ = capgw.audit()
    assert first["TURRET_CAPABILITY"] == "chat.send_message"
    assert first["TURRET_PARAMS_HMAC"] == second["TURRET_PARAMS_HMAC"]
    canonical = json.dumps(
        {"capability": "chat.send_message", "params": params},
        sort_keys=True,
        separators=(",", ":"),
    )
    key = capgw.canaries["params-key"].encode()
    expected = hmac.new(key, canonical.encode(), hashlib.sha256).hexdigest()
    assert first["TURRET_PARAMS_HMAC"] == expected
    assert "TURRET_PARAMS" not in first
    text = capgw.audit_path.read_text()
    assert "launch code" not in text and ROOM not in text


async def test_audit_logs_params_the_capability_lists(capgw: CapGateway) -> None:
    assert (await capgw.call("git.close_issue", {"repo": "notes", "index": 4})).status == 200
    decision = capgw.audit()[0]
    assert json.loads(decision["TURRET_PARAMS"]) == {"index": 4, "repo": "notes"}


async def test_audit_failure_is_503_and_nothing_is_sent(
    tmp_path: Path, leak_check: Canaries
) -> None:
    # /dev/full refuses every write with ENOSPC: a real audit failure.
    gw, servers = await make_capability_gateway(
        tmp_path, creds=leak_check, audit_path=Path("/dev/full")
    )
    try:
        resp = await gw.call("pve.pct_status", {"ctid": 101})
        assert resp.status == 503
        assert (await resp.json())["error"]["code"] == "unavailable"
        assert gw.fakes.seen == []
    finally:
        await gw.client.close()
        for server in servers:
            await server.close()


@pytest.mark.parametrize(
    ("body", "allowed", "rule"),
    [
        (
            {"capability": "pve.pct_status", "params": {"ctid": 101}},
            True,
            "agents.opencode.capabilities[2]",
        ),
        (
            {
                "capability": "qbit.add_torrent",
                "params": {"magnet": "magnet:?xt=urn:btih:" + "c" * 40},
            },
            False,
            "agents.opencode.deny[0]",
        ),
        (
            {"service": "qbit", "method": "GET", "path": "/api/v2/torrents/info?x=1"},
            True,
            "agents.opencode.proxy[0]",
        ),
        (
            {"service": "qbit", "method": "GET", "path": "/api/v2/app/preferences"},
            False,
            "agents.opencode.deny[1]",
        ),
        ({"service": "qbit", "method": "POST", "path": "/api/v2/torrents/info"}, False, None),
    ],
)
async def test_explain_gives_decision_without_acting(
    capgw: CapGateway, body: dict[str, Any], allowed: bool, rule: str | None
) -> None:
    resp = await capgw.explain(body)
    assert resp.status == 200, await resp.text()
    decision = (await resp.json())["decision"]
    assert (decision["allowed"], decision["rule"]) == (allowed, rule)
    assert decision["reason"] and decision["report_only"] is False
    assert capgw.fakes.seen == []


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"capability": "pve.pct_status", "params": {"ctid": "101"}}, 422),
        ({"capability": "pve.pct_status", "params": [], "x": 1}, 422),
        ({"service": "qbit", "method": "BREW", "path": "/"}, 422),
        ({"service": "qbit", "method": ["GET"], "path": "/"}, 422),
        ({"service": "qbit", "method": {"GET": 1}, "path": "/"}, 422),
        ({"service": "qbit", "method": "GET", "path": "/a/../b"}, 400),
        ({"capability": "nope.nothing"}, 404),
    ],
)
async def test_explain_rejects_bad_questions(
    capgw: CapGateway, body: dict[str, Any], status: int
) -> None:
    resp = await capgw.explain(body)
    code = {400: "bad_request", 404: "not_found", 422: "invalid_params"}[status]
    await assert_error(resp, status, code)
    assert capgw.fakes.seen == []


async def test_explain_never_records_an_escaped_secret_in_logged_params(
    capgw: CapGateway,
) -> None:
    token = capgw.tokens["opencode"]
    escaped = "\\u" + f"{ord(token[0]):04x}" + token[1:]  # one JSON escape hides it in the body
    body = '{"capability": "push.note", "params": {"text": "' + escaped + '"}}'
    resp = await capgw.client.post("/v1/explain", data=body, headers=capgw.auth())
    assert resp.status == 200
    record = capgw.audit()[-1]
    # opencode has no grant for push.note: decided by its name, the params are not even read
    # (tests/adversarial/test_audit_hygiene.py records them for an agent with the grant).
    assert "TURRET_PARAMS" not in record
    assert token not in capgw.audit_path.read_text()


async def test_explain_in_report_mode_says_report_only(capgw: CapGateway) -> None:
    resp = await capgw.explain(
        {"capability": "chat.read_messages", "params": {"room_id": "!ops:example.org"}},
        agent="rollout",
    )
    decision = (await resp.json())["decision"]
    assert decision["allowed"] is True and decision["report_only"] is True
    denied = await capgw.explain(
        {"capability": "pve.pct_status", "params": {"ctid": 101}}, agent="rollout"
    )
    assert (await denied.json())["decision"]["allowed"] is False


async def test_proxy_to_login_service_uses_the_session_and_hides_it(capgw: CapGateway) -> None:
    resp = await capgw.client.get("/v1/proxy/qbit/api/v2/torrents/info", headers=capgw.auth())
    assert resp.status == 200
    assert "Set-Cookie" not in resp.headers
    echoed = await capgw.client.get("/v1/proxy/qbit/api/v2/app/cookie", headers=capgw.auth())
    assert await echoed.text() == "you sent: [REDACTED]"
    assert capgw.fakes.logins == 1
    denied = await capgw.client.get("/v1/proxy/qbit/api/v2/app/preferences", headers=capgw.auth())
    assert denied.status == 403


async def test_upstream_echo_in_a_projected_field_is_redacted(capgw: CapGateway) -> None:
    leak = f"token is {capgw.canaries['matrix-token']}"
    capgw.fakes.messages[ROOM].append(
        {"event_id": "$1", "type": "m.room.message", "content": {"msgtype": "m.text", "body": leak}}
    )
    resp = await capgw.call("chat.read_messages", {"room_id": ROOM})
    (message,) = (await resp.json())["result"]["messages"]
    assert message["body"] == "token is [REDACTED]"
    assert capgw.audit()[-1]["TURRET_REDACTIONS"] == "1"


@pytest.mark.parametrize("secret", ["own-token", "credential"])
@pytest.mark.parametrize("form", ["plain", "json-escaped"])
async def test_call_with_a_secret_in_a_parameter_is_refused(
    capgw: CapGateway, secret: str, form: str
) -> None:
    """Attack: a prompt-injected agent files its token or a credential into an issue, the first
    character hidden behind a JSON escape (\\u0074) that only decoding the body reveals."""
    value = capgw.tokens["opencode"] if secret == "own-token" else capgw.canaries["gitea-token"]
    if form == "json-escaped":
        value = f"\\u{ord(value[0]):04x}{value[1:]}"
    raw = b'{"repo": "me/x", "title": "t", "body": "' + value.encode() + b'"}'
    resp = await capgw.call("git.create_issue", raw=raw)
    assert resp.status == 403, await resp.text()
    assert (await resp.json())["error"]["code"] == "credential_in_request"
    assert capgw.fakes.seen == []
    (record,) = capgw.audit()
    assert record["TURRET_DECISION"] == "deny"
    assert record["TURRET_REASON"].startswith("exfiltration guard")


def _escaped(secret: str) -> str:
    """`secret` with its first character behind a JSON escape: the raw body does not show it."""
    return f"\\u{ord(secret[0]):04x}{secret[1:]}"


async def test_call_with_a_secret_in_a_parameter_name_is_refused(capgw: CapGateway) -> None:
    """Attack: the token hidden by a JSON escape in a parameter *name*, which the error for an
    unknown or malformed name would quote into the audit record and the response. An unknown
    name is refused before the guards run, quoting no name (tests/adversarial/test_oracle.py)."""
    raw = b'{"ctid": 101, "' + _escaped(capgw.tokens["opencode"]).encode() + b'": 1}'
    resp = await capgw.call("pve.pct_status", raw=raw)
    assert resp.status == 422, await resp.text()
    error = (await resp.json())["error"]
    assert error["message"] == "params: unknown parameter name; pve.pct_status takes ctid, node"
    assert capgw.fakes.seen == []


@pytest.mark.parametrize(
    "params",
    [
        '{"ctid": 101, "SECRET": 1}',  # a malformed name, quoted in the error
        '{"ctid": 101, "xxxxxxxxxxxxxxxxxxxxSECRET": 1}',  # a long one, quoted cut short
        '{"SECRET": 1, "SECRET": 2}',  # a duplicate key, quoted in the error
    ],
)
async def test_explain_never_quotes_an_escaped_secret_in_a_parameter_name(
    capgw: CapGateway, params: str
) -> None:
    token = capgw.tokens["opencode"]
    body = '{"capability": "pve.pct_status", "params": ' + params + "}"
    body = body.replace("SECRET", _escaped(token))
    resp = await capgw.client.post("/v1/explain", data=body, headers=capgw.auth())
    assert resp.status in {400, 422}, await resp.text()
    seen = (await resp.text()) + capgw.audit_path.read_text()
    # Not even a part of it: the scrubber recognises whole values only.
    assert token[:20] not in seen and token[-20:] not in seen
