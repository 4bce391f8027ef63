"""The per-agent limiter as pure logic, on a clock the test moves."""

from __future__ import annotations

import pytest

from turret.errors import TooManyRequests
from turret.ratelimit import AgentLimiter, AgentLimits


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_limiter_bucket_refills_at_rate_and_caps_at_burst() -> None:
    clock = Clock()
    limiter = AgentLimiter(clock)
    limits = AgentLimits(requests_per_second=2, burst=3, max_concurrent=100)
    for _ in range(3):
        limiter.acquire("a", limits)
        limiter.release("a")
    with pytest.raises(TooManyRequests) as info:
        limiter.acquire("a", limits)
    assert info.value.retry_after == 1
    clock.now += 0.5  # one token back
    limiter.acquire("a", limits)
    limiter.release("a")
    clock.now += 3600  # refill never exceeds the burst
    for _ in range(3):
        limiter.acquire("a", limits)
        limiter.release("a")
    with pytest.raises(TooManyRequests):
        limiter.acquire("a", limits)


def test_limiter_concurrency_is_per_agent_and_released() -> None:
    limiter = AgentLimiter(Clock())
    limits = AgentLimits(requests_per_second=100, burst=100, max_concurrent=2)
    with limiter.slot("a", limits), limiter.slot("a", limits):
        with pytest.raises(TooManyRequests, match="in flight"):
            limiter.acquire("a", limits)
        limiter.acquire("b", limits)  # another agent is unaffected
    assert limiter.in_flight("a") == 0 and limiter.in_flight("b") == 1


def test_limiter_retry_after_rounds_up_slow_rates() -> None:
    limiter = AgentLimiter(Clock())
    limits = AgentLimits(requests_per_second=0.1, burst=1, max_concurrent=5)
    limiter.acquire("a", limits)
    with pytest.raises(TooManyRequests) as info:
        limiter.acquire("a", limits)
    assert info.value.retry_after == 10
