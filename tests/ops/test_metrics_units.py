"""The metrics' pure parts: the counters behind them, upstream error kinds, the histogram, and
a registry of its own per gateway."""

from __future__ import annotations

import pytest
from prometheus_client import REGISTRY

from tests.ops.conftest import series
from turret.config import load_config
from turret.counters import DURATION_BUCKETS, CountingRecorder, RequestCounters, upstream_error_kind
from turret.metrics import registry_for, render
from turret.model import Config
from turret.records import INFO, Event, Fields
from turret.state import StateStore

CONFIG = """
services:
  forge: {url: "http://127.0.0.1:1", auth: {bearer: gitea-token}, kind: gitea}
agents:
  alice: {token_sha256: "%s", proxy: [{service: forge, methods: [GET], paths: ["/**"]}]}
""" % ("ab" * 32)


class Sink:
    def record(self, event: Event, message: str, fields: Fields, priority: int = INFO) -> None:
        """Keeps nothing."""


class View:
    """What the collector reads, without a server."""

    def __init__(self, config: Config) -> None:
        self.state: StateStore | None = None
        self._counters = RequestCounters()
        self.config = config

    def counters(self) -> RequestCounters:
        return self._counters


@pytest.mark.parametrize(
    ("status", "reason", "kind"),
    [
        (504, "service 'forge' did not answer within 5 s", "timeout"),
        (502, "address policy refused: 10.0.0.1 is private", "address_refused"),
        (502, "upstream framing refused: transfer coding other than chunked", "framing"),
        (502, "upstream failure: ClientConnectorError", "connection"),
        (502, "upstream failure: ServerDisconnectedError", "connection"),
        (502, "upstream response is larger than the service's max_response_bytes", "too_large"),
        (502, "echo guard: credential material in a decoded view of the answer", "withheld"),
        (502, "forge.user: the service answered HTTP 500", "status"),
        (502, "something new", "other"),
        (502, "forwarded", None),  # the upstream itself answered 502
        (504, "done", None),
        (502, "echo guard redacted credential material", None),
        (200, "forwarded", None),
        (403, "denied", None),
        ("502", "upstream failure: X", None),  # not a status Turret wrote
        (None, None, None),
    ],
)
def test_upstream_error_kind_of_each_recorded_failure(
    status: object, reason: object, kind: str | None
) -> None:
    assert upstream_error_kind(status, reason) == kind


def test_counters_fold_names_the_config_does_not_define() -> None:
    config = load_config(CONFIG)
    counters = RequestCounters()
    recorder = CountingRecorder(Sink(), counters, lambda: 1.0, lambda: config)
    for service in ("forge", "nope", "FORGE", "forge/..", "forge\x00", "-"):
        recorder.record(
            Event.DECISION, "", {"TURRET_AGENT": "alice", "TURRET_SERVICE": service,
                                 "TURRET_DECISION": "deny"},
        )  # fmt: skip
    recorder.record(
        Event.DECISION, "", {"TURRET_AGENT": "alice", "TURRET_CAPABILITY": "forge.made_up",
                             "TURRET_DECISION": "deny"},
    )  # fmt: skip
    assert counters.requests == {
        ("alice", "forge", "-", "deny"): 1,
        ("alice", "-", "-", "deny"): 6,
    }
    assert set(counters.decisions) == {("alice", "forge", "deny"), ("alice", "-", "deny")}


def test_counters_count_a_capability_call_under_its_service() -> None:
    config = load_config(CONFIG)
    capability = next(iter(config.capabilities))
    counters = RequestCounters()
    recorder = CountingRecorder(Sink(), counters, lambda: 1.0, lambda: config)
    fields: Fields = {"TURRET_AGENT": "alice", "TURRET_CAPABILITY": capability}
    recorder.record(Event.DECISION, "", {**fields, "TURRET_DECISION": "allow"})
    recorder.record(
        Event.OUTCOME, "", {**fields, "TURRET_STATUS": 502, "TURRET_DURATION_MS": 12.0,
                            "TURRET_REASON": "upstream failure: ClientConnectorError"},
    )  # fmt: skip
    assert counters.requests == {("alice", "forge", capability, "allow"): 1}
    assert counters.upstream_errors == {("forge", "connection"): 1}
    assert counters.durations["forge"].counts[DURATION_BUCKETS.index(0.025)] == 1


def test_histogram_buckets_are_cumulative_and_upper_bounds_inclusive() -> None:
    view = View(load_config(CONFIG))
    counters = view.counters()
    recorder = CountingRecorder(Sink(), counters, lambda: 1.0, lambda: view.config)
    for ms in (5.0, 5.001, 999.0, 120_000.0):
        recorder.record(
            Event.OUTCOME, "", {"TURRET_SERVICE": "forge", "TURRET_DURATION_MS": ms,
                                "TURRET_STATUS": 200, "TURRET_REASON": "forwarded"},
        )  # fmt: skip
    got = series(render(registry_for(view)).decode())
    bucket = "turret_request_duration_seconds_bucket"
    assert got[(bucket, (("le", "0.005"), ("service", "forge")))] == 1  # 5 ms is <= 0.005 s
    assert got[(bucket, (("le", "0.01"), ("service", "forge")))] == 2
    assert got[(bucket, (("le", "1.0"), ("service", "forge")))] == 3
    assert got[(bucket, (("le", "60.0"), ("service", "forge")))] == 3
    assert got[(bucket, (("le", "+Inf"), ("service", "forge")))] == 4
    assert got[("turret_request_duration_seconds_count", (("service", "forge"),))] == 4
    total = got[("turret_request_duration_seconds_sum", (("service", "forge"),))]
    assert total == pytest.approx(121.009001)


def test_registry_is_one_per_gateway_and_never_the_global_one() -> None:
    first, second = View(load_config(CONFIG)), View(load_config(CONFIG))
    first.counters().audit_failures = 3
    a, b = render(registry_for(first)).decode(), render(registry_for(second)).decode()
    assert series(a)[("turret_audit_failures_total", ())] == 3
    assert series(b)[("turret_audit_failures_total", ())] == 0
    assert "turret_" not in render(REGISTRY).decode()
    # Without a state store, only what the counters know, and the store's absence.
    assert series(b)[("turret_state_store", ())] == 0 and "turret_sealed" not in b


def test_mint_failures_are_counted_by_provider() -> None:
    view = View(load_config(CONFIG))
    view.counters().mint_failures.update({"gh-app": 4, "vault": 1})
    got = series(render(registry_for(view)).decode())
    assert got[("turret_credential_mint_failures_total", (("provider", "gh-app"),))] == 4
    assert got[("turret_credential_mint_failures_total", (("provider", "vault"),))] == 1
