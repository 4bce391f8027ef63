"""Audit integrity: an agent must not be able to forge, split, bloat or suppress audit records."""

from __future__ import annotations

import json

import pytest

from tests.adversarial.conftest import Hardened, MakeHardened, error_of
from turret.audit import Auditor, LineSink
from turret.records import MAX_FIELD_CHARS


@pytest.mark.parametrize(
    "target",
    [
        pytest.param(
            '/v1/proxy/gitea/api/v1/x%0a{"TURRET_DECISION":"allow","TURRET_AGENT":"root"}',
            id="encoded-newline-and-json",
        ),
        pytest.param("/v1/proxy/gi%0d%0atea/api/v1/user", id="crlf-in-service-name"),
        pytest.param("/v1/proxy/gitea/api/v1/x%e2%80%a8%e2%80%a9y", id="unicode-line-separators"),
        pytest.param("/v1/proxy/gitea/api/v1/x?q=%1b[31mred", id="terminal-escape-in-query"),
    ],
)
async def test_audit_log_forging_is_inert(hardened: Hardened, target: str) -> None:
    """Attack: embed newlines, JSON or escapes in the target to forge an extra audit record."""
    resp = await hardened.request("GET", target.replace('"', "%22").replace("{", "%7b"))
    assert resp.status in (400, 403, 404)
    lines = hardened.audit_path.read_text().splitlines()
    assert len(lines) == 1
    (record,) = [json.loads(line) for line in lines]
    assert record["TURRET_DECISION"] == "deny" and record["TURRET_AGENT"] == "opencode"
    assert all(c.isprintable() for v in record.values() for c in v)


async def test_audit_oversized_fields_are_capped(hardened: Hardened) -> None:
    """Attack: a path of thousands of characters to bloat or truncate the audit trail."""
    resp = await hardened.request("GET", "/v1/proxy/gitea/api/v1/" + "a" * 7000)
    assert resp.status == 403
    (record,) = hardened.audit()
    assert len(record["TURRET_PATH"]) <= MAX_FIELD_CHARS + len("...[truncated]")
    assert record["TURRET_PATH"].endswith("...[truncated]")
    assert len(record["MESSAGE"]) <= MAX_FIELD_CHARS + len("...[truncated]")


async def test_audit_unwritable_trail_fails_closed(make_hardened: MakeHardened) -> None:
    """Attack: fill the disk (here /dev/full) so actions happen without an audit record."""
    gw = await make_hardened(auditor=Auditor(LineSink.open("/dev/full")))
    resp = await gw.request("GET", "/v1/proxy/gitea/api/v1/user")
    assert resp.status == 503
    assert (await error_of(resp))["code"] == "unavailable"
    assert gw.upstream.received == []


async def test_audit_agent_name_comes_from_the_token(hardened: Hardened) -> None:
    """Attack: claim another identity with headers a naive logger might trust."""
    resp = await hardened.request(
        "GET",
        "/v1/proxy/gitea/api/v1/user",
        headers={"X-Agent": "root", "User-Agent": "agent=root", "From": "root"},
    )
    assert resp.status == 200
    assert {r["TURRET_AGENT"] for r in hardened.audit()} == {"opencode"}


async def test_audit_header_values_are_not_recorded(hardened: Hardened) -> None:
    """Attack: get arbitrary text into the audit trail through request headers."""
    resp = await hardened.request(
        "GET", "/v1/proxy/gitea/api/v1/user", headers={"X-Note": "INJECTED"}
    )
    assert resp.status == 200
    (got,) = hardened.upstream.received
    assert got.headers["X-Note"] == "INJECTED"  # forwarded, so it was in Turret's hands
    assert len(hardened.audit()) == 2  # the decision and the outcome were both written
    assert "INJECTED" not in hardened.audit_path.read_text()


async def test_audit_token_pasted_in_path_is_redacted(hardened: Hardened) -> None:
    """Attack: put the agent's token in a denied path, so the audit trail stores the secret."""
    resp = await hardened.request("GET", f"/v1/proxy/gitea/api/v1/nope/{hardened.token}")
    assert resp.status == 403
    text = hardened.audit_path.read_text()
    assert hardened.token not in text and "[REDACTED]" in text
