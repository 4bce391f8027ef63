"""The minting framework (`turret.providers.minting`) around a source that only counts: cache,
expiry, scopes, single flight, retries with backoff and the fail-closed 503, the records, the
guards and revocation. Time is a `FakeTime`: nothing here sleeps."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from tests.pipeline.conftest import Recording
from tests.providers.minters import (
    CountingMinter,
    FakeTime,
    Priorities,
    new_pool,
    request_audit,
    scope_for,
)
from turret.authkinds import Injection
from turret.connector import SessionPool
from turret.errors import AuditUnavailable, CredentialUnavailable, UnprocessableEntity
from turret.providers.minting import Minted, MintingProvider, failing, revoke_all, rotate
from turret.records import CRIT, Event


@pytest.fixture
async def pool() -> AsyncIterator[SessionPool]:
    sessions = new_pool()
    yield sessions
    await sessions.close()


def header(injection: Injection) -> str:
    return injection.headers["Authorization"]


async def test_minting_caches_until_refresh_before_expiry(pool: SessionPool) -> None:
    time, rec = FakeTime(), Recording()
    minter = CountingMinter(time)
    scope = scope_for(pool, request_audit(rec))
    first = await minter.injection(scope)
    time.advance(3600 - 301)  # still more than refresh_before (300 s) left
    assert header(await minter.injection(scope)) == header(first)
    assert len(minter.mints) == 1
    time.advance(2)  # now within 5 minutes of expiry: minted anew
    second = await minter.injection(scope)
    assert header(second) != header(first)
    assert len(minter.mints) == 2
    # The first token can still be valid at its source: it stays guarded until it expires.
    assert "tok-1-secretvalue" in minter.guarded()
    time.advance(300)
    assert "tok-1-secretvalue" not in minter.guarded()
    assert "tok-2-secretvalue" in minter.guarded()


async def test_minting_records_each_issuance_never_the_value(pool: SessionPool) -> None:
    time, rec = FakeTime(), Recording()
    minter = CountingMinter(time, {"repositories": ["{repo}"]})
    await minter.injection(scope_for(pool, request_audit(rec, "req-9"), repo="alpha"))
    fields = rec.last(Event.CREDENTIAL_MINTED)
    assert fields["TURRET_REQUEST_ID"] == "req-9"
    assert fields["TURRET_AGENT"] == "bot"
    assert fields["TURRET_PROVIDER"] == "counter"
    assert fields["TURRET_SCOPE"] == '{"repositories":["alpha"]}'
    assert fields["TURRET_EXPIRES"] == "2027-01-15T09:00:00Z"
    assert "secretvalue" not in repr(rec.records)
    assert "secretvalue" not in repr(minter) + repr(minter.state)


async def test_minting_one_credential_per_distinct_scope(pool: SessionPool) -> None:
    time, rec = FakeTime(), Recording()
    minter = CountingMinter(time, {"repositories": ["{repo}"], "fixed": "x-{repo}-y"})
    audit = request_audit(rec)
    a = await minter.injection(scope_for(pool, audit, repo="alpha"))
    b = await minter.injection(scope_for(pool, audit, repo="beta"))
    again = await minter.injection(scope_for(pool, audit, repo="alpha"))
    assert header(a) != header(b)
    assert header(again) == header(a)
    assert minter.mints == [
        {"repositories": ["alpha"], "fixed": "x-alpha-y"},
        {"repositories": ["beta"], "fixed": "x-beta-y"},
    ]


async def test_minting_scope_without_its_parameter_is_refused(pool: SessionPool) -> None:
    minter = CountingMinter(FakeTime(), {"repositories": ["{repo}"]})
    with pytest.raises(UnprocessableEntity):
        await minter.injection(scope_for(pool, request_audit(Recording())))
    assert minter.mints == []


async def test_minting_concurrent_requests_mint_once(pool: SessionPool) -> None:
    time, rec = FakeTime(), Recording()
    minter = CountingMinter(time)
    minter.gate = asyncio.Event()
    calls = [minter.injection(scope_for(pool, request_audit(rec, f"r{i}"))) for i in range(20)]
    waiting = asyncio.gather(*calls)
    await minter.started.wait()
    minter.gate.set()
    injections = await waiting
    assert len(minter.mints) == 1
    assert len({header(i) for i in injections}) == 1
    assert rec.events().count(Event.CREDENTIAL_MINTED) == 1


async def test_minting_retries_three_times_then_fails_closed(pool: SessionPool) -> None:
    time, rec = FakeTime(rolls=[0.5, 0.25, 1.0]), Recording()
    minter = CountingMinter(time)
    minter.failures = -1
    with pytest.raises(CredentialUnavailable) as caught:
        await minter.injection(scope_for(pool, request_audit(rec)))
    assert len(minter.mints) == 4  # one try and exactly three retries
    # Full jitter: a random share of a cap doubling from 0.5 s.
    assert time.slept == [0.5 * 0.5, 0.25 * 1.0, 1.0 * 2.0]
    assert caught.value.status == 503
    assert caught.value.code == "credential_unavailable"
    assert "secretvalue" not in caught.value.message + caught.value.reason
    event, _, fields = rec.records[-1]
    assert event is Event.CREDENTIAL_MINT_FAILED
    assert fields["TURRET_PROVIDER"] == "counter"
    assert fields["TURRET_ATTEMPTS"] == 4
    assert failing({"svc": minter}) == ["counter"]


async def test_minting_alert_is_priority_crit(pool: SessionPool) -> None:
    rec = Priorities()
    minter = CountingMinter(FakeTime())
    minter.failures = -1
    with pytest.raises(CredentialUnavailable):
        await minter.injection(scope_for(pool, request_audit(rec)))
    assert rec.priorities == [(Event.CREDENTIAL_MINT_FAILED, CRIT)]


async def test_minting_deadline_shorter_than_backoff_stops_early(pool: SessionPool) -> None:
    time, rec = FakeTime(), Recording()
    minter = CountingMinter(time)
    minter.failures = -1
    scope = scope_for(pool, request_audit(rec))
    with pytest.raises(CredentialUnavailable) as caught:
        await minter.injection(type(scope)(**{**scope.__dict__, "timeout": 1.0}))
    # 0.5 s of backoff fits in the 1 s deadline; the next 1 s does not: no third attempt.
    assert len(minter.mints) == 2
    assert time.slept == [0.5]
    assert "deadline" in caught.value.reason


async def test_minting_a_retry_that_works_clears_the_alarm(pool: SessionPool) -> None:
    time, rec = FakeTime(), Recording()
    minter = CountingMinter(time)
    minter.failures = -1
    with pytest.raises(CredentialUnavailable):
        await minter.injection(scope_for(pool, request_audit(rec)))
    minter.failures = 2
    await minter.injection(scope_for(pool, request_audit(rec)))
    assert len(minter.mints) == 4 + 3
    assert failing({"svc": minter}) == []


@pytest.mark.parametrize(
    ("bad", "why"),
    [
        (Minted(Injection({"Authorization": "Bearer x"}), 0.0, secrets=("x",)), "expired"),
        (Minted(Injection({"Authorization": ""}), 2e9), "unusable"),
        (Minted(Injection({"Authorization": "Bearer a\r\nX: y"}), 2e9), "unusable"),
        (Minted(Injection(), 2e9), "unusable"),
    ],
)
async def test_minting_malformed_answers_fail_closed(
    pool: SessionPool, bad: Minted, why: str
) -> None:
    minter = CountingMinter(FakeTime())
    minter.answer = bad
    with pytest.raises(CredentialUnavailable) as caught:
        await minter.injection(scope_for(pool, request_audit(Recording())))
    assert why in caught.value.reason
    assert len(minter.mints) == 4
    assert minter.state.cache == {}


async def test_minting_lost_issuance_record_means_the_value_is_not_used(
    pool: SessionPool,
) -> None:
    minter = CountingMinter(FakeTime())
    rec = Recording(lose=Event.CREDENTIAL_MINTED)
    with pytest.raises(AuditUnavailable):
        await minter.injection(scope_for(pool, request_audit(rec)))
    assert minter.state.cache == {}
    await minter.revoked_one.wait()  # the orphaned token is revoked in the background
    assert minter.revoked == ["tok-1-secretvalue"]


async def test_minting_guards_know_each_issued_value(pool: SessionPool) -> None:
    time = FakeTime()
    minter = CountingMinter(time)
    assert minter.live_guard() is None
    injection = await minter.injection(scope_for(pool, request_audit(Recording())))
    guard = minter.live_guard()
    assert guard is not None
    assert guard.found(b'{"echo": "dG9rLTEtc2VjcmV0dmFsdWU="}')  # base64 of the token
    response_guard = minter.response_guard(injection)
    assert response_guard is not None
    assert response_guard.redact(b"x tok-1-secretvalue y")[0] == b"x [REDACTED] y"
    time.advance(3601)
    assert minter.live_guard() is None
    assert minter.response_guard(Injection({"A": "b"})) is None


async def test_minting_401_mints_anew_once(pool: SessionPool) -> None:
    minter = CountingMinter(FakeTime())
    scope = scope_for(pool, request_audit(Recording()))
    stale = await minter.injection(scope)
    assert await minter.renew(scope, stale, 403) is None
    fresh = await minter.renew(scope, stale, 401)
    assert fresh is not None
    assert header(fresh) != header(stale)


async def test_minting_revoke_all_revokes_every_outstanding_lease(pool: SessionPool) -> None:
    time, rec = FakeTime(), Recording()
    minter = CountingMinter(time, {"r": "{repo}"})
    for repo in ("a", "b", "c"):
        await minter.injection(scope_for(pool, request_audit(rec), repo=repo))
    assert await revoke_all({"svc": minter}, rec) == 3
    assert sorted(minter.revoked) == [f"tok-{n}-secretvalue" for n in (1, 2, 3)]
    assert rec.last(Event.CREDENTIAL_REVOKED)["TURRET_COUNT"] == 3
    assert minter.state.cache == {}
    assert await revoke_all({"svc": minter}, rec) == 0  # a second killswitch: nothing left
    assert len(minter.revoked) == 3
    assert "tok-1-secretvalue" in minter.guarded()  # still guarded until it expires
    await minter.injection(scope_for(pool, request_audit(rec), repo="a"))
    assert len(minter.mints) == 4  # after the killswitch, a new credential


async def test_minting_revoke_waits_for_a_mint_in_flight(pool: SessionPool) -> None:
    minter = CountingMinter(FakeTime())
    minter.gate = asyncio.Event()
    request = asyncio.ensure_future(minter.injection(scope_for(pool, request_audit(Recording()))))
    await minter.started.wait()
    revoking = asyncio.ensure_future(minter.revoke_outstanding())
    minter.gate.set()  # the token is issued only now, after the killswitch began
    report = await revoking
    await request
    assert report.revoked == 1
    assert minter.revoked == ["tok-1-secretvalue"]


async def test_minting_state_carries_over_only_for_the_same_scope(pool: SessionPool) -> None:
    time = FakeTime()
    old = CountingMinter(time, {"r": "x"})
    await old.injection(scope_for(pool, request_audit(Recording())))
    same, other = CountingMinter(time, {"r": "x"}), CountingMinter(time, {"r": "y"})
    same.carry_over(old)
    other.carry_over(old)
    assert same.state is old.state
    assert other.state is not old.state


def test_minting_base_class_has_no_source() -> None:
    base = MintingProvider("svc", "p", {})
    with pytest.raises(NotImplementedError):
        asyncio.run(base.mint({}, 0.0))


async def test_minting_rotate_revokes_what_it_can_and_forgets_the_rest(pool: SessionPool) -> None:
    """`rotate` (`turret rotate PROVIDER`) of a source that cannot revoke (STS, a KV value)
    only forgets: it says so, rather than counting them as revoked; one that can is revoked."""
    time, rec = FakeTime(), Recording()
    minter = CountingMinter(time, {"r": "{repo}"})
    for repo in ("a", "b"):
        await minter.injection(scope_for(pool, request_audit(rec), repo=repo))
    (rotation,) = (await rotate({"svc": minter}, "counter", rec, 1000)).values()
    assert (rotation.revoked, rotation.forgotten, rotation.failures) == (0, 2, ())
    record = rec.last(Event.CREDENTIAL_ROTATED)
    assert (record["TURRET_COUNT"], record["TURRET_FORGOTTEN"]) == (0, 2)
    assert record["TURRET_OPERATOR_UID"] == 1000
    assert "tok-" not in str(rec.records)  # the fingerprint, never a value
    minter.revocable = lambda minted: True  # type: ignore[method-assign]
    await minter.injection(scope_for(pool, request_audit(rec), repo="a"))
    assert len(minter.mints) == 3  # the rotation emptied the cache: minted anew
    (rotation,) = (await rotate({"svc": minter}, "counter", rec, 1000)).values()
    assert (rotation.revoked, rotation.forgotten) == (1, 0)
    assert await rotate({"svc": minter}, "another", rec, 1000) == {}  # no such provider
