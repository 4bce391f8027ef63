"""Request counters for `turret status`, `turret agents` and `/metrics`, counted from the audit
records.

Every request Turret answers leaves a decision record, so counting those records (rather than
counting in each handler) cannot miss an endpoint. `CountingRecorder` wraps the auditor and
counts a record once it is written; a record the sink lost counts as an audit failure. Outcome
records feed the duration histogram and the upstream errors by kind.

A service or capability name in a record may be what the agent sent (`/v1/proxy/NAME/...`), so
with the config at hand (`names`) every name the config does not define is counted as "-": an
agent cannot grow the counters (or a metric's label series) with names it makes up.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from turret.errors import AuditUnavailable
from turret.model import Config
from turret.records import INFO, Event, Fields, Recorder

# Upper bounds (seconds) of the request duration histogram; the last bucket is +Inf.
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
# Outcome reasons of an answer that came from the upstream (whatever its status).
_ANSWERED = frozenset({"forwarded", "done", "echo guard redacted credential material"})
# What an upstream failure's recorded reason starts with -> its kind.
_ERROR_KINDS = (
    ("address policy refused", "address_refused"),
    ("upstream framing refused", "framing"),
    ("upstream failure", "connection"),
    ("upstream response is larger", "too_large"),
)


@dataclass
class Durations:
    """One histogram: counts per bucket of `DURATION_BUCKETS` (+Inf last), and the sum."""

    counts: list[int] = field(default_factory=lambda: [0] * (len(DURATION_BUCKETS) + 1))
    total: float = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(DURATION_BUCKETS, seconds)] += 1
        self.total += seconds


@dataclass
class RequestCounters:
    """Decisions by (agent, target, decision), the last time each agent was seen, lost records;
    and for metrics, requests by (agent, service, capability, decision), durations by service
    and upstream errors by (service, kind).

    `target` is the service of a proxied request or the capability of a call ("-" for neither);
    `agent` is "-" for a request without a valid token.
    """

    decisions: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    last_seen: dict[str, float] = field(default_factory=dict)
    audit_failures: int = 0
    requests: Counter[tuple[str, str, str, str]] = field(default_factory=Counter)
    durations: dict[str, Durations] = field(default_factory=dict)
    upstream_errors: Counter[tuple[str, str]] = field(default_factory=Counter)
    mint_failures: Counter[str] = field(default_factory=Counter)  # by provider (config names)

    def observe(
        self, event: Event, fields: Fields, at: float, config: Config | None = None
    ) -> None:
        """Count one written record; with `config`, names it does not define count as "-"."""
        if event is Event.OUTCOME:
            self._outcome(fields, config)
        if event is Event.CREDENTIAL_MINT_FAILED:
            self.mint_failures[str(fields.get("TURRET_PROVIDER") or "-")] += 1
        if event is not Event.DECISION:
            return
        agent = str(fields.get("TURRET_AGENT") or "-")
        service, capability = _names(fields, config)
        decision = str(fields.get("TURRET_DECISION") or "-")
        suppressed = fields.get("TURRET_SUPPRESSED")
        # A flood summary stands for the refusals it did not record one by one.
        count = suppressed if isinstance(suppressed, int) else 1
        target = capability if capability != "-" else service
        self.decisions[(agent, target, decision)] += count
        self.requests[(agent, service, capability, decision)] += count
        if agent != "-":
            self.last_seen[agent] = at

    def _outcome(self, fields: Fields, config: Config | None) -> None:
        service, _ = _names(fields, config)
        ms = fields.get("TURRET_DURATION_MS")
        if isinstance(ms, (int, float)):
            self.durations.setdefault(service, Durations()).observe(ms / 1000)
        kind = upstream_error_kind(fields.get("TURRET_STATUS"), fields.get("TURRET_REASON"))
        if kind is not None:
            self.upstream_errors[(service, kind)] += 1

    def by_agent(self, agent: str) -> dict[str, int]:
        """The agent's decisions: {"allow": n, "deny": m}."""
        out: Counter[str] = Counter()
        for (name, _, decision), n in self.decisions.items():
            if name == agent:
                out[decision] += n
        return dict(out)

    def totals(self) -> dict[str, int]:
        """Every decision counted: {"allow": n, "deny": m}."""
        out: Counter[str] = Counter()
        for (_, _, decision), n in self.decisions.items():
            out[decision] += n
        return dict(out)


def _names(fields: Fields, config: Config | None) -> tuple[str, str]:
    """The (service, capability) of a record, "-" for none; with `config`, only names it
    defines (a capability call counts under its capability's service)."""
    service = str(fields.get("TURRET_SERVICE") or "-")
    capability = str(fields.get("TURRET_CAPABILITY") or "-")
    if config is None:
        return service, capability
    cap = config.capabilities.get(capability)
    if cap is None:
        capability = "-"
    if service not in config.services:
        service = cap.service if cap is not None else "-"
    return service, capability


def upstream_error_kind(status: object, reason: object) -> str | None:
    """The kind of upstream failure an outcome record tells of (timeout, connection,
    address_refused, framing, too_large, withheld, status, other), or None if the upstream
    answered or the request never went out."""
    if not isinstance(status, int) or status not in (502, 504) or reason in _ANSWERED:
        return None
    if status == 504:
        return "timeout"
    text = str(reason)
    for prefix, kind in _ERROR_KINDS:
        if text.startswith(prefix):
            return kind
    if "withheld" in text or "echo guard" in text:
        return "withheld"
    if "answered HTTP" in text:
        return "status"
    return "other"


class CountingRecorder:
    """A `Recorder` that counts what `inner` wrote into `counters`; `clock` gives wall time,
    `names` the config whose service and capability names may be counted."""

    def __init__(
        self,
        inner: Recorder,
        counters: RequestCounters,
        clock: Callable[[], float],
        names: Callable[[], Config] | None = None,
    ) -> None:
        self._inner = inner
        self._counters = counters
        self._clock = clock
        self._names = names

    def record(self, event: Event, message: str, fields: Fields, priority: int = INFO) -> None:
        """Write through `inner`, then count; a lost record counts as an audit failure."""
        try:
            self._inner.record(event, message, fields, priority)
        except AuditUnavailable:
            self._counters.audit_failures += 1
            raise
        config = self._names() if self._names is not None else None
        self._counters.observe(event, fields, self._clock(), config)
