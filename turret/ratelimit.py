"""Per-agent rate and concurrency limits, the unauthenticated flood gate, and server limits.

Each agent has a token bucket (`requests_per_second` refill, `burst` capacity) and a cap on the
requests it may have in flight, so one runaway agent cannot starve the others. Requests no agent
answers for (no valid token) share one more bucket, so a flood of them cannot fill the audit
trail or make journald drop records. A request over a limit is answered 429 with `Retry-After`.
The logic takes the clock as an argument and does no I/O.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from turret.errors import TooManyRequests


@dataclass(frozen=True)
class AgentLimits:
    """How much one agent may ask of Turret."""

    requests_per_second: float = 50.0
    burst: int = 100
    max_concurrent: int = 32


@dataclass(frozen=True)
class FloodLimits:
    """How many requests without a valid token all clients together may make."""

    requests_per_second: float = 20.0
    burst: int = 200


@dataclass(frozen=True)
class ServerLimits:
    """Limits on what any client may send, enforced before a request is authenticated."""

    max_connections: int = 512  # open client connections, all listeners together
    max_headers: int = 64  # header fields in one request
    max_header_bytes: int = 8190  # one header field
    max_url_bytes: int = 8190  # the request line
    header_timeout: float = 15.0  # seconds to receive a whole request head; also idle keep-alive
    body_timeout: float = 30.0  # seconds to receive a whole request body
    agent: AgentLimits = AgentLimits()  # the default for agents that set no `limits`
    unauthenticated: FloodLimits = FloodLimits()  # all requests without a valid token together


# The range of each limit key in the config: (lowest, highest, integer?).
LIMIT_RANGES: dict[str, tuple[float, float, bool]] = {
    "max_connections": (1, 1 << 20, True),
    "max_headers": (1, 1024, True),
    "max_header_bytes": (256, 1 << 20, True),
    "max_url_bytes": (256, 1 << 20, True),
    "header_timeout": (0.1, 3600, False),
    "body_timeout": (0.1, 3600, False),
    "requests_per_second": (0.001, 1e6, False),
    "burst": (1, 1 << 20, True),
    "max_concurrent": (1, 1 << 16, True),
}


@dataclass
class _Bucket:
    tokens: float
    updated: float
    in_flight: int = 0

    def refill(self, now: float, rate: float, burst: int) -> None:
        elapsed = max(0.0, now - self.updated)
        self.tokens = min(float(burst), self.tokens + elapsed * rate)
        self.updated = now

    def wait(self, rate: float) -> int | None:
        """Whole seconds until one token is back, or None if one is there now."""
        return None if self.tokens >= 1.0 else max(1, math.ceil((1.0 - self.tokens) / rate))


class AgentLimiter:
    """Token buckets and in-flight counts, per agent name; state outlives configuration reloads."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}

    def acquire(self, agent: str, limits: AgentLimits, *, spend: bool = True) -> None:
        """Take one request slot for `agent`, or raise `TooManyRequests` with a retry delay.

        With `spend=False` only the concurrency cap applies (the rate was charged already)."""
        now = self._clock()
        bucket = self._buckets.get(agent)
        if bucket is None:
            bucket = self._buckets[agent] = _Bucket(float(limits.burst), now)
        bucket.refill(now, limits.requests_per_second, limits.burst)
        if bucket.in_flight >= limits.max_concurrent:
            raise TooManyRequests(
                "too many requests in flight for this agent",
                retry_after=1,
                reason=f"concurrency limit ({limits.max_concurrent} in flight)",
            )
        wait = bucket.wait(limits.requests_per_second) if spend else None
        if wait is not None:
            raise TooManyRequests(
                "rate limit exceeded for this agent",
                retry_after=wait,
                reason=f"rate limit ({limits.requests_per_second:g}/s, burst {limits.burst})",
            )
        bucket.tokens -= 1.0 if spend else 0.0
        bucket.in_flight += 1

    def release(self, agent: str) -> None:
        """Give back the in-flight slot taken by `acquire`."""
        bucket = self._buckets.get(agent)
        if bucket is not None and bucket.in_flight > 0:
            bucket.in_flight -= 1

    @contextmanager
    def slot(self, agent: str, limits: AgentLimits, *, spend: bool = True) -> Iterator[None]:
        """Hold one request slot for the duration of the block."""
        self.acquire(agent, limits, spend=spend)
        try:
            yield
        finally:
            self.release(agent)

    def in_flight(self, agent: str) -> int:
        """Requests `agent` has in flight now."""
        bucket = self._buckets.get(agent)
        return bucket.in_flight if bucket else 0


FLOOD_WINDOW = 1.0  # seconds: while a flood lasts, one refusal per window is recorded


class Flooded(TooManyRequests):
    """Over the unauthenticated limit; `recorded` says whether this refusal gets its own audit
    record (the first of its window does)."""

    def __init__(self, retry_after: int, limits: FloodLimits, *, recorded: bool) -> None:
        super().__init__(
            "too many requests without a valid token",
            retry_after=retry_after,
            reason=f"unauthenticated rate limit ({limits.requests_per_second:g}/s, "
            f"burst {limits.burst})",
        )
        self.recorded = recorded


class FloodGate:
    """One token bucket for every request without a valid token, from any client.

    Refusals are not recorded one by one: that would turn a flood of requests into a flood of
    audit records. The first refusal in each `FLOOD_WINDOW` is recorded; the others are counted,
    and `unrecorded` hands out the count once their window has closed, for one summary record.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._bucket: _Bucket | None = None
        self._unrecorded = 0
        self._window_end = -math.inf

    def admit(self, limits: FloodLimits) -> None:
        """Spend one token for a request without a valid token, or raise `Flooded`."""
        now = self._clock()
        if self._bucket is None:
            self._bucket = _Bucket(float(limits.burst), now)
        self._bucket.refill(now, limits.requests_per_second, limits.burst)
        wait = self._bucket.wait(limits.requests_per_second)
        if wait is None:
            self._bucket.tokens -= 1.0
            return
        if now < self._window_end:
            self._unrecorded += 1
            raise Flooded(wait, limits, recorded=False)
        self._window_end = now + FLOOD_WINDOW
        raise Flooded(wait, limits, recorded=True)

    def unrecorded(self, *, final: bool = False) -> int:
        """How many refusals went without a record, once their window has closed (at once if
        `final`); each is counted once."""
        if not self._unrecorded or (self._clock() < self._window_end and not final):
            return 0
        count, self._unrecorded = self._unrecorded, 0
        return count
