"""Request counters for `turret status` and `turret agents`, counted from the audit records.

Every request Turret answers leaves a decision record, so counting those records (rather than
counting in each handler) cannot miss an endpoint. `CountingRecorder` wraps the auditor and
counts a record once it is written; a record the sink lost counts as an audit failure.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from turret.errors import AuditUnavailable
from turret.records import INFO, Event, Fields, Recorder


@dataclass
class RequestCounters:
    """Decisions by (agent, target, decision), the last time each agent was seen, lost records.

    `target` is the service of a proxied request or the capability of a call ("-" for neither);
    `agent` is "-" for a request without a valid token.
    """

    decisions: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    last_seen: dict[str, float] = field(default_factory=dict)
    audit_failures: int = 0
    mint_failures: Counter[str] = field(default_factory=Counter)  # by provider

    def observe(self, event: Event, fields: Fields, at: float) -> None:
        """Count one written record."""
        if event is Event.CREDENTIAL_MINT_FAILED:
            self.mint_failures[str(fields.get("TURRET_PROVIDER") or "-")] += 1
        if event is not Event.DECISION:
            return
        agent = str(fields.get("TURRET_AGENT") or "-")
        target = fields.get("TURRET_SERVICE") or fields.get("TURRET_CAPABILITY") or "-"
        decision = str(fields.get("TURRET_DECISION") or "-")
        suppressed = fields.get("TURRET_SUPPRESSED")
        # A flood summary stands for the refusals it did not record one by one.
        count = suppressed if isinstance(suppressed, int) else 1
        self.decisions[(agent, str(target), decision)] += count
        if agent != "-":
            self.last_seen[agent] = at

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


class CountingRecorder:
    """A `Recorder` that counts what `inner` wrote into `counters`; `clock` gives wall time."""

    def __init__(
        self, inner: Recorder, counters: RequestCounters, clock: Callable[[], float]
    ) -> None:
        self._inner = inner
        self._counters = counters
        self._clock = clock

    def record(self, event: Event, message: str, fields: Fields, priority: int = INFO) -> None:
        """Write through `inner`, then count; a lost record counts as an audit failure."""
        try:
            self._inner.record(event, message, fields, priority)
        except AuditUnavailable:
            self._counters.audit_failures += 1
            raise
        self._counters.observe(event, fields, self._clock())
