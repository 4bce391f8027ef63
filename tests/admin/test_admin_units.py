"""The pure parts: the `admin:` section, the request counters, the reason text, grants."""

from __future__ import annotations

import pytest

from turret.admin import reason_of
from turret.config import load_config
from turret.counters import CountingRecorder, RequestCounters
from turret.errors import AuditUnavailable
from turret.model import DEFAULT_ADMIN_SOCKET, AdminSettings
from turret.records import INFO, Event, Fields

BASE = """
services:
  gitea: {url: "https://git.example.org", auth: {bearer: gitea-token}}
agents:
  bot: {token_sha256: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08}
"""


@pytest.mark.parametrize(
    ("section", "expected"),
    [
        ("", AdminSettings()),  # not bound without activation unless asked for
        ("admin: {}\n", AdminSettings(DEFAULT_ADMIN_SOCKET)),
        ("admin:\n", AdminSettings(DEFAULT_ADMIN_SOCKET)),
        ("admin: {socket: /run/x.sock}\n", AdminSettings("/run/x.sock")),
        (
            "admin: {allow_uids: [1000, 0], allow_group: turret-ops}\n",
            AdminSettings(DEFAULT_ADMIN_SOCKET, (1000, 0), "turret-ops"),
        ),
    ],
)
def test_config_admin_section(section: str, expected: AdminSettings) -> None:
    assert load_config(BASE + section).admin == expected


class Sink:
    def __init__(self, *, fail: bool = False) -> None:
        self.fail = fail

    def record(self, event: Event, message: str, fields: Fields, priority: int = INFO) -> None:
        if self.fail:
            raise AuditUnavailable("disk full")


def test_counters_count_decisions_by_agent_target_and_decision() -> None:
    counters = RequestCounters()
    recorder = CountingRecorder(Sink(), counters, lambda: 1234.0)
    decide = Event.DECISION
    recorder.record(
        decide, "", {"TURRET_AGENT": "a", "TURRET_SERVICE": "g", "TURRET_DECISION": "allow"}
    )
    recorder.record(
        decide, "", {"TURRET_AGENT": "a", "TURRET_CAPABILITY": "c", "TURRET_DECISION": "deny"}
    )
    recorder.record(decide, "", {"TURRET_DECISION": "deny", "TURRET_SUPPRESSED": 40})  # flood
    recorder.record(Event.OUTCOME, "", {"TURRET_AGENT": "b", "TURRET_DECISION": "allow"})
    assert counters.decisions == {
        ("a", "g", "allow"): 1,
        ("a", "c", "deny"): 1,
        ("-", "-", "deny"): 40,
    }
    assert counters.by_agent("a") == {"allow": 1, "deny": 1} and counters.by_agent("b") == {}
    assert counters.totals() == {"allow": 1, "deny": 41}
    assert counters.last_seen == {"a": 1234.0}


def test_counters_count_a_lost_record_as_an_audit_failure_and_not_as_a_decision() -> None:
    counters = RequestCounters()
    recorder = CountingRecorder(Sink(fail=True), counters, lambda: 0.0)
    with pytest.raises(AuditUnavailable):
        recorder.record(Event.DECISION, "", {"TURRET_AGENT": "a", "TURRET_DECISION": "allow"})
    assert counters.audit_failures == 1 and not counters.decisions


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (None, "default"),
        ("", "default"),
        ("   ", "default"),
        (7, "default"),
        ("leaked\nTURRET_AGENT=x", "leaked TURRET_AGENT=x"),  # no forged record lines
        ("\x1b[31mred", " [31mred"),
        ("x" * 600, "x" * 500),
    ],
)
def test_reason_of_keeps_operator_text_printable_and_short(given: object, expected: str) -> None:
    assert reason_of(given, "default") == expected
