"""Unauthenticated floods: one shared bucket, and a flood does not become a flood of records.

Attack: a local process with no token (or a prompt-injected agent sending garbage tokens) sends
requests as fast as it can. Each would be a 401 with an audit record at NOTICE: enough of them
and journald's rate limit drops records, the decision records of real agents among them.
"""

from __future__ import annotations

import pytest

from tests.adversarial.conftest import Hardened, MakeHardened
from turret.config import load_config
from turret.errors import ConfigError
from turret.pipeline.request import record_flood_summary
from turret.ratelimit import FLOOD_WINDOW, Flooded, FloodGate, FloodLimits
from turret.web.keys import CONTEXT


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_flood_gate_records_one_refusal_per_window_and_counts_the_rest() -> None:
    clock = Clock()
    gate, limits = FloodGate(clock), FloodLimits(requests_per_second=2, burst=3)
    for _ in range(3):
        gate.admit(limits)
    outcomes = []
    for _ in range(5):
        with pytest.raises(Flooded) as refused:
            gate.admit(limits)
        outcomes.append(refused.value.recorded)
        assert refused.value.retry_after >= 1
    assert outcomes == [True, False, False, False, False]
    assert gate.unrecorded() == 0  # the window is still open: the count is not final
    clock.now += FLOOD_WINDOW
    assert gate.unrecorded() == 4
    assert gate.unrecorded() == 0  # counted once
    gate.admit(limits)  # two tokens came back over the second
    gate.admit(limits)
    with pytest.raises(Flooded) as refused:
        gate.admit(limits)
    assert refused.value.recorded  # a new window: recorded again
    with pytest.raises(Flooded):
        gate.admit(limits)
    assert gate.unrecorded(final=True) == 1  # at exit, whatever the window


FLOOD_LIMITS = "limits:\n  unauthenticated: {requests_per_second: 0.01, burst: 3}\n"


async def _flood(gw: Hardened, n: int, target: str = "/v1/whoami") -> list[int]:
    statuses = []
    for i in range(n):
        resp = await gw.request("GET", target, headers={"Authorization": f"Bearer turret_x{i}"})
        statuses.append(resp.status)
        if resp.status == 429:
            assert (await resp.json())["error"]["code"] == "rate_limited"
            assert int(resp.headers["Retry-After"]) >= 1
    return statuses


async def test_flood_of_bad_tokens_is_refused_and_summarised(make_hardened: MakeHardened) -> None:
    gw = await make_hardened(limits=FLOOD_LIMITS)
    statuses = await _flood(gw, 40)
    assert statuses[:3] == [401, 401, 401] and set(statuses[3:]) == {429}
    app = gw.client.app
    assert app is not None
    record_flood_summary(app[CONTEXT], final=True)
    records = gw.audit()
    recorded_429 = [r for r in records if r.get("TURRET_STATUS") == "429" and "TURRET_PATH" in r]
    summaries = [r for r in records if "TURRET_SUPPRESSED" in r]
    # One refusal recorded per window (the flood takes a few at most), the rest counted.
    assert 1 <= len(recorded_429) <= 5, records
    assert len(recorded_429) + sum(int(r["TURRET_SUPPRESSED"]) for r in summaries) == 37
    assert len(records) <= 3 + 2 * len(recorded_429)
    assert all(r["PRIORITY"] == "5" and r["TURRET_DECISION"] == "deny" for r in summaries)


@pytest.mark.parametrize("target", ["/v1/nothing", "/v1/proxy/gitea/api/v1/user", "/v1/whoami"])
async def test_flood_does_not_stop_agents_with_a_valid_token(
    make_hardened: MakeHardened, target: str
) -> None:
    """The flood gate is charged only for requests no agent answers for: a real agent, even on
    an unknown endpoint, pays from its own bucket and keeps being served."""
    gw = await make_hardened(limits=FLOOD_LIMITS)
    assert set((await _flood(gw, 10, target))[3:]) == {429}
    for _ in range(5):
        resp = await gw.request("GET", target)
        assert resp.status in {200, 404}, await resp.text()
    assert (await gw.request("GET", "/v1/whoami")).status == 200


async def test_flood_gate_counts_unknown_endpoints_without_a_token(
    make_hardened: MakeHardened,
) -> None:
    gw = await make_hardened(limits=FLOOD_LIMITS)
    statuses = []
    for _ in range(6):
        resp = await gw.client.session.get(gw.url("/v1/nothing"))
        statuses.append(resp.status)
    assert statuses == [404, 404, 404, 429, 429, 429]


def test_flood_limits_are_read_and_checked() -> None:
    config = load_config(
        "services: {}\nagents: {}\nlimits:\n  unauthenticated: {requests_per_second: 5, burst: 7}\n"
    )
    assert config.limits.unauthenticated == FloodLimits(5.0, 7)
    assert load_config("services: {}\nagents: {}\n").limits.unauthenticated == FloodLimits()
    with pytest.raises(ConfigError) as bad:
        load_config("services: {}\nagents: {}\nlimits:\n  unauthenticated: {burst: 0, x: 1}\n")
    assert "limits.unauthenticated.burst" in str(bad.value)
    assert "limits.unauthenticated" in str(bad.value) and "x" in str(bad.value)
