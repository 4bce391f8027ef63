"""Per-agent rate and concurrency limits, and the server's resource limits.

Each agent has a token bucket (`requests_per_second` refill, `burst` capacity) and a cap on the
requests it may have in flight, so one runaway agent cannot starve the others. A request over
either limit is answered 429 with `Retry-After`. The logic takes the clock as an argument and
does no I/O.
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
class ServerLimits:
    """Limits on what any client may send, enforced before a request is authenticated."""

    max_connections: int = 512  # open client connections, all listeners together
    max_headers: int = 64  # header fields in one request
    max_header_bytes: int = 8190  # one header field
    max_url_bytes: int = 8190  # the request line
    header_timeout: float = 15.0  # seconds to receive a whole request head; also idle keep-alive
    body_timeout: float = 30.0  # seconds to receive a whole request body
    agent: AgentLimits = AgentLimits()  # the default for agents that set no `limits`


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
        elapsed = max(0.0, now - bucket.updated)
        refilled = bucket.tokens + elapsed * limits.requests_per_second
        bucket.tokens = min(float(limits.burst), refilled)
        bucket.updated = now
        if bucket.in_flight >= limits.max_concurrent:
            raise TooManyRequests(
                "too many requests in flight for this agent",
                retry_after=1,
                reason=f"concurrency limit ({limits.max_concurrent} in flight)",
            )
        if spend and bucket.tokens < 1.0:
            wait = (1.0 - bucket.tokens) / limits.requests_per_second
            raise TooManyRequests(
                "rate limit exceeded for this agent",
                retry_after=max(1, math.ceil(wait)),
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
