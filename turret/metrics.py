"""`GET /metrics` on the admin socket: Turret's state in the Prometheus text format.

A `TurretCollector` is registered in a registry of its own per admin app (never
prometheus-client's global one, which would mix in whatever else the process registers), and
builds every family at scrape time: from the request counters (`turret.counters`, fed by the
audit records as they are written) and from the state store (seal, revocations, derived tokens,
credential ages, the last check-in). Nothing is counted twice per request, and a scrape costs a
few store queries.

Label values are only names from the configuration (agents, services, capabilities) or from the
store (credential names Turret itself recorded): `turret.counters` folds any other name an agent
sends into "-", so no request can add a label series.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Protocol

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.registry import Collector

from turret.counters import DURATION_BUCKETS, RequestCounters
from turret.deadman import last_checkin
from turret.state import StateStore

# The classic text format: every name here is a legacy-valid one, and every Prometheus reads it.
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4


class MetricsView(Protocol):
    """What the collector reads of the running server (the `Gateway`)."""

    state: StateStore | None

    def counters(self) -> RequestCounters:
        """The agents' app's request counters."""


class TurretCollector(Collector):
    """Every Turret metric, built from `view` when scraped; `wall` gives the time."""

    def __init__(self, view: MetricsView, wall: Callable[[], float] = time.time) -> None:
        self._view = view
        self._wall = wall

    def describe(self) -> list[Metric]:
        """Nothing up front: registering must not query the store."""
        return []

    def collect(self) -> Iterator[Metric]:
        """The families of one scrape."""
        counters = self._view.counters()
        yield from _requests(counters)
        yield from _store(self._view.state, self._wall())


def registry_for(view: MetricsView, wall: Callable[[], float] = time.time) -> CollectorRegistry:
    """A registry of its own holding Turret's collector over `view`."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(TurretCollector(view, wall))
    return registry


def render(registry: CollectorRegistry) -> bytes:
    """The text exposition of `registry`."""
    return generate_latest(registry)


def _requests(counters: RequestCounters) -> Iterator[Metric]:
    requests = CounterMetricFamily(
        "turret_requests",
        "Requests decided, by agent, service, capability and decision",
        labels=["agent", "service", "capability", "decision"],
    )
    for (agent, service, capability, decision), n in sorted(counters.requests.items()):
        requests.add_metric([agent, service, capability, decision], n)
    yield requests
    durations = HistogramMetricFamily(
        "turret_request_duration_seconds",
        "Time from a request's arrival to its outcome record, by service",
        labels=["service"],
    )
    for service, hist in sorted(counters.durations.items()):
        cumulative, buckets = 0, []
        for bound, count in zip((*DURATION_BUCKETS, float("inf")), hist.counts, strict=True):
            cumulative += count
            buckets.append((_le(bound), float(cumulative)))
        durations.add_metric([service], buckets, hist.total)
    yield durations
    errors = CounterMetricFamily(
        "turret_upstream_errors",
        "Requests that failed on the way to or back from the upstream, by service and kind",
        labels=["service", "kind"],
    )
    for (service, kind), n in sorted(counters.upstream_errors.items()):
        errors.add_metric([service, kind], n)
    yield errors
    yield CounterMetricFamily(
        "turret_audit_failures", "Audit records the sink lost", value=counters.audit_failures
    )
    mints = CounterMetricFamily(
        "turret_credential_mint_failures",
        "Mints a provider failed after its retries (requests answered 503), by provider",
        labels=["provider"],
    )
    for provider, n in sorted(counters.mint_failures.items()):
        mints.add_metric([provider], n)
    yield mints


def _le(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(bound)


def _store(state: StateStore | None, now: float) -> Iterator[Metric]:
    yield GaugeMetricFamily(
        "turret_state_store", "1 when a state store is open", value=int(state is not None)
    )
    if state is None:
        return
    yield GaugeMetricFamily(
        "turret_sealed", "1 while Turret is sealed", value=int(state.controls.sealed() is not None)
    )
    yield GaugeMetricFamily(
        "turret_revoked_agents",
        "Agents an operator revoked",
        value=len(state.controls.revoked_agents()),
    )
    yield GaugeMetricFamily(
        "turret_derived_tokens_in_force",
        "Derived tokens neither expired, revoked nor used up",
        value=state.tokens.in_force(now),
    )
    ages = GaugeMetricFamily(
        "turret_credential_age_seconds",
        "Seconds since the credential's current value was first seen (by its fingerprint)",
        labels=["credential"],
    )
    for cred in state.credentials.all():
        ages.add_metric([cred.name], max(0.0, now - cred.last_changed))
    yield ages
    checkin = last_checkin(state)
    if checkin is not None:
        yield GaugeMetricFamily(
            "turret_last_checkin_timestamp_seconds",
            "When `turret checkin` last ran (seconds since the epoch)",
            value=checkin[0],
        )
