"""The audit trail: fields, sanitising, and failing closed when a record cannot be written."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.conftest import Gateway, Upstream, assert_error, make_gateway
from tests.gateway import Canaries
from turret.audit import Auditor, LineSink
from turret.errors import AuditUnavailable
from turret.records import MAX_FIELD_CHARS, Event, clean

REQUEST_FIELDS = {
    "TURRET_EVENT",
    "TURRET_REQUEST_ID",
    "TURRET_AGENT",
    "TURRET_SERVICE",
    "TURRET_METHOD",
    "TURRET_PATH",
    "TURRET_DECISION",
    "TURRET_REASON",
    "MESSAGE_ID",
    "MESSAGE",
    "PRIORITY",
}


def test_clean_escapes_controls_and_caps_length() -> None:
    assert clean("a\nb\r\x00c") == "a\\x0ab\\x0d\\x00c"
    long = clean("x" * 5000)
    assert long.startswith("x" * MAX_FIELD_CHARS) and long.endswith("...[truncated]")
    assert len(long) < MAX_FIELD_CHARS + 20


def test_line_sink_writes_one_json_object_per_line(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    auditor = Auditor(LineSink.open(str(path)))
    auditor.record(Event.DECISION, "m\nFORGED=1", {"TURRET_AGENT": "a\nTURRET_AGENT=root"})
    (line,) = path.read_text().splitlines()
    record = json.loads(line)
    assert record["TURRET_AGENT"] == "a\\x0aTURRET_AGENT=root"
    assert record["MESSAGE"] == "m\\x0aFORGED=1"
    assert record["MESSAGE_ID"] == Event.DECISION.value and record["TURRET_EVENT"] == "decision"


def test_auditor_raises_when_the_record_is_lost() -> None:
    auditor = Auditor(LineSink.open("/dev/full"))
    with pytest.raises(AuditUnavailable):
        auditor.record(Event.DECISION, "x", {})


async def test_audit_decision_precedes_forwarding_and_outcome_follows(gateway: Gateway) -> None:
    resp = await gateway.request("POST", "/v1/proxy/gitea/api/v1/user", data=b"12345")
    assert resp.status == 200
    decision, outcome = gateway.audit()
    assert decision.keys() >= REQUEST_FIELDS
    assert decision["TURRET_DECISION"] == "allow"
    assert decision["TURRET_RULE"] == "agents.opencode.proxy[0]"
    assert float(decision["ts"]) <= float(outcome["ts"])
    assert outcome["TURRET_EVENT"] == "outcome"
    assert (
        outcome["TURRET_REQUEST_ID"]
        == decision["TURRET_REQUEST_ID"]
        == resp.headers["X-Request-Id"]
    )
    assert (outcome["TURRET_STATUS"], outcome["TURRET_BYTES_IN"]) == ("200", "5")
    assert int(outcome["TURRET_BYTES_OUT"]) == len(await resp.read())
    assert float(outcome["TURRET_DURATION_MS"]) >= 0


async def test_audit_agent_strings_are_capped(gateway: Gateway) -> None:
    long_segment = "a" * 3000
    resp = await gateway.request("GET", f"/v1/proxy/gitea/api/v1/repos/me/{long_segment}")
    assert resp.status == 200
    record = gateway.audit()[0]
    assert len(record["TURRET_PATH"]) < MAX_FIELD_CHARS + 20


async def test_audit_failure_refuses_with_503_and_forwards_nothing(
    upstream: Upstream, leak_check: Canaries, tmp_path: Path
) -> None:
    gw = await make_gateway(
        upstream, creds=leak_check, tmp_path=tmp_path, audit_path=Path("/dev/full")
    )
    resp = await gw.request("GET", "/v1/proxy/gitea/api/v1/user")
    await assert_error(resp, 503, "unavailable")
    assert upstream.received == []
    whoami = await gw.client.get("/v1/whoami", headers=gw.auth())
    assert whoami.status == 503


@pytest.mark.parametrize(
    ("method", "target", "status"),
    [
        ("GET", "/v2/nothing", 404),
        ("POST", "/v1/whoami", 405),
        ("GET", "/v1/%70roxy/gitea/api/v1/user", 400),  # routed by its decoded path only
    ],
)
async def test_audit_records_refusals_no_handler_saw(
    gateway: Gateway, method: str, target: str, status: int
) -> None:
    resp = await gateway.request(method, target)
    assert resp.status == status
    (record,) = gateway.audit()
    assert record["TURRET_DECISION"] == "deny" and record["TURRET_STATUS"] == str(status)
    assert record["TURRET_REQUEST_ID"] == resp.headers["X-Request-Id"]


async def test_audit_lost_outcome_still_returns_the_true_answer(
    upstream: Upstream,
    leak_check: Canaries,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The decision is written; the audit pipe then breaks while the upstream acts. A 503 now
    would be a lie that invites a retry: the agent gets the upstream's answer."""
    read_end, write_end = os.pipe()
    gw = await make_gateway(
        upstream, creds=leak_check, tmp_path=tmp_path, auditor=Auditor(LineSink(write_end))
    )
    try:
        upstream.on_request = lambda: os.close(read_end)  # the reader goes away mid-request
        resp = await gw.request("POST", "/v1/proxy/gitea/api/v1/user", data=b"act")
        assert resp.status == 200
        assert len(upstream.received) == 1
    finally:
        await gw.client.close()
        os.close(write_end)
    assert "outcome record of request" in caplog.text
