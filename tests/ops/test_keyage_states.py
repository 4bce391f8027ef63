"""Key-age states with a controlled clock, the warnings (at adoption, then once a day), the
enforced max_age refusing before anything is sent, and the fingerprints in the store."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterator
from pathlib import Path

import pytest

from turret.config import load_config
from turret.credmodel import DAY, CredentialPolicy
from turret.credwatch import KeyAge, announce, announced_by, credentials_doc, unwrap
from turret.errors import CredentialUnavailable, StateError
from turret.keyage import UNUSED_AFTER, KeyState, assess
from turret.providers import Scope
from turret.providers.aged import AgedProvider
from turret.providers.build import build_runtime
from turret.records import ERR, WARNING, Event, Fields
from turret.runtime import Runtime
from turret.state import StateStore

T0 = 1_800_000_000.0
POLICY = CredentialPolicy(max_age=90 * DAY, warn_before=14 * DAY)


class Records:
    """A recorder keeping what it is given."""

    def __init__(self) -> None:
        self.records: list[tuple[Event, str, Fields, int]] = []

    def record(self, event: Event, message: str, fields: Fields, priority: int = 6) -> None:
        self.records.append((event, message, fields, priority))

    def of(self, *events: Event) -> list[tuple[Event, str, Fields, int]]:
        return [r for r in self.records if r[0] in events]


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(
    ("days", "used_days_ago", "state"),
    [
        (0, 0, KeyState.OK),
        (75.9, 0, KeyState.OK),
        (76, 0, KeyState.ROTATE_SOON),  # exactly warn_before ahead of max_age
        (89.99, None, KeyState.ROTATE_SOON),  # rotate-soon outranks unused
        (90, 0, KeyState.OVERDUE),  # exactly at max_age
        (400, None, KeyState.OVERDUE),
        (45, 31, KeyState.UNUSED),
        (45, None, KeyState.UNUSED),  # never used since first seen, 45 days ago
        (29, None, KeyState.OK),  # too new to call unused
    ],
)
def test_assess_states_with_a_controlled_clock(
    days: float, used_days_ago: float | None, state: KeyState
) -> None:
    now = T0 + days * DAY
    used = None if used_days_ago is None else now - used_days_ago * DAY
    got = assess(POLICY, T0, used, now)
    assert got.state is state
    assert got.age == pytest.approx(days * DAY)
    assert got.due == T0 + 90 * DAY


def test_assess_without_max_age_or_store() -> None:
    assert assess(CredentialPolicy(), T0, T0, T0 + 5000 * DAY).state is KeyState.UNUSED
    assert assess(CredentialPolicy(), T0, T0 + 4999 * DAY, T0 + 5000 * DAY).state is KeyState.OK
    assert assess(POLICY, None, None, T0).state is KeyState.UNKNOWN
    # An agent's token is never "unused": its use is not tracked.
    idle = T0 + UNUSED_AFTER * 2
    assert assess(CredentialPolicy(), T0, None, idle, tracks_use=False).state is KeyState.OK


CONFIG = """services:
  gitea: {url: "http://127.0.0.1:9", auth: {bearer: gitea-token}}
  apikey: {url: "http://127.0.0.1:9", auth: {header: {name: X-Key, value: api-key}}}
agents:
  bot: {token_credential: bot-token, proxy: []}
credentials:
  gitea-token: {max_age: 90d, enforce_max_age: true}
  api-key: {max_age: 30d, warn_before: 5d}
  bot-token: {max_age: 365d}
"""


def runtime(creds_dir: Path, text: str = CONFIG) -> Runtime:
    return build_runtime(load_config(text), str(creds_dir))


@pytest.fixture
def store(tmp_path: Path) -> Iterator[StateStore]:
    (tmp_path / "state").mkdir(mode=0o700)
    s = StateStore.open(tmp_path / "state")
    yield s
    s.close()


def test_keyage_warns_at_adoption_then_once_a_day(creds_dir: Path, store: StateStore) -> None:
    clock, rec = Clock(T0), Records()
    keyage = KeyAge(store, rec, clock)
    keyage.adopt(runtime(creds_dir))
    keyage.warn()
    assert rec.of(Event.CREDENTIAL_OVERDUE, Event.CREDENTIAL_ROTATE_SOON) == []
    clock.now = T0 + 26 * DAY  # api-key within 5 days of its 30
    keyage.warn()
    (soon,) = rec.of(Event.CREDENTIAL_ROTATE_SOON)
    assert soon[2]["TURRET_CREDENTIAL"] == "api-key" and soon[3] == WARNING


async def test_keyage_tick_warns_once_a_day(creds_dir: Path, store: StateStore) -> None:
    clock, rec = Clock(T0), Records()
    keyage = KeyAge(store, rec, clock)
    keyage.adopt(runtime(creds_dir))
    clock.now = T0 + 31 * DAY
    keyage.warn()  # as at start
    assert len(rec.of(Event.CREDENTIAL_OVERDUE)) == 1
    for hours in range(1, 24):  # the heartbeat runs many times a day: no repeat
        clock.now = T0 + 31 * DAY + hours * 3600
        await keyage.tick()
    assert len(rec.of(Event.CREDENTIAL_OVERDUE)) == 1
    clock.now = T0 + 32 * DAY
    await keyage.tick()
    overdue = rec.of(Event.CREDENTIAL_OVERDUE)
    assert len(overdue) == 2
    assert {r[2]["TURRET_CREDENTIAL"] for r in overdue} == {"api-key"}
    assert all(r[3] == ERR for r in overdue)
    assert keyage.overdue(clock.now) == 1


async def test_enforced_max_age_refuses_before_injection(
    creds_dir: Path, store: StateStore
) -> None:
    clock, rec = Clock(T0), Records()
    keyage = KeyAge(store, rec, clock)
    served = keyage.adopt(runtime(creds_dir))
    gitea = served.providers["gitea"]
    assert isinstance(gitea, AgedProvider)
    clock.now = T0 + 90 * DAY - 1
    assert (await gitea.injection(Scope("gitea"))).headers
    clock.now = T0 + 90 * DAY  # overdue from this instant, whatever the daily check said
    with pytest.raises(CredentialUnavailable) as info:
        await gitea.injection(Scope("gitea"))
    assert info.value.status == 503 and info.value.code == "credential_unavailable"
    # Not enforced: api-key's service is still served though it is overdue too.
    clock.now = T0 + 400 * DAY
    assert (await served.providers["apikey"].injection(Scope("apikey"))).headers


async def test_enforced_max_age_counts_from_the_stored_change(
    creds_dir: Path, store: StateStore
) -> None:
    clock, rec = Clock(T0 + 100 * DAY), Records()
    built = runtime(creds_dir)
    # Seen 100 days ago under the same value: a restart does not reset the age.
    KeyAge(store, Records(), Clock(T0)).adopt(built)
    served = KeyAge(store, rec, clock).adopt(built)
    with pytest.raises(CredentialUnavailable):
        await served.providers["gitea"].injection(Scope("gitea"))


def test_enforced_max_age_needs_a_store(creds_dir: Path) -> None:
    with pytest.raises(StateError, match="state directory"):
        KeyAge(None, Records()).adopt(runtime(creds_dir))
    # Without enforcement, no store is fine: ages are just unknown.
    plain = runtime(creds_dir, CONFIG.replace(", enforce_max_age: true", ""))
    assert KeyAge(None, Records()).adopt(plain) is plain


async def test_use_is_noted_and_flushed(creds_dir: Path, store: StateStore) -> None:
    clock, rec = Clock(T0), Records()
    keyage = KeyAge(store, rec, clock)
    served = keyage.adopt(runtime(creds_dir))
    clock.now = T0 + 10
    await served.providers["gitea"].injection(Scope("gitea"))
    assert {a.name: a.last_used for a in store.credentials.all()}["gitea-token"] is None
    clock.now = T0 + 61  # the flush interval has passed
    await keyage.tick()
    assert {a.name: a.last_used for a in store.credentials.all()}["gitea-token"] == T0 + 10


def test_rotation_recorded_with_the_announced_uid(
    creds_dir: Path, store: StateStore, canaries: dict[str, str]
) -> None:
    clock, rec = Clock(T0), Records()
    keyage = KeyAge(store, rec, clock)
    keyage.adopt(runtime(creds_dir))
    before = {a.name: a.fingerprint for a in store.credentials.all()}
    announce(store, load_config(CONFIG), "gitea-token", 1000, T0 + DAY - 60)
    (creds_dir / "gitea-token").write_text("a-new-gitea-value\n")
    clock.now = T0 + DAY
    served = keyage.adopt(runtime(creds_dir))
    (rotated,) = rec.of(Event.CREDENTIAL_ROTATED)
    fields = rotated[2]
    assert fields["TURRET_CREDENTIAL"] == "gitea-token"
    assert fields["TURRET_OPERATOR_UID"] == "1000"
    assert fields["TURRET_OLD_FINGERPRINT"] == before["gitea-token"][:8]
    assert fields["TURRET_NEW_FINGERPRINT"] != fields["TURRET_OLD_FINGERPRINT"]
    assert store.meta.get("rotating:gitea-token") is None
    doc = {d["name"]: d for d in credentials_doc(served, store, clock.now)}
    assert doc["gitea-token"]["fingerprint"] == fields["TURRET_NEW_FINGERPRINT"]
    assert doc["gitea-token"]["age_seconds"] == 0  # the age restarts at the new value
    assert doc["api-key"]["age_seconds"] == DAY


def test_fingerprint_is_keyed_not_a_plain_hash(
    creds_dir: Path, store: StateStore, canaries: dict[str, str], tmp_path: Path
) -> None:
    KeyAge(store, Records(), Clock(T0)).adopt(runtime(creds_dir))
    shown = {a.name: a.fingerprint for a in store.credentials.all()}
    for name in ("gitea-token", "api-key", "bot-token"):
        value = canaries[name].encode()
        plain = {
            hashlib.new(algo, data).hexdigest()
            for algo in ("md5", "sha1", "sha256", "sha512", "blake2b", "sha3_256")
            for data in (value, value + b"\n")
        }
        assert all(not p.startswith(shown[name][:8]) for p in plain)
        assert all(not p.endswith(shown[name][:8]) for p in plain)
        # Unkeyed HMAC (empty key) is no better than a plain hash.
        assert not hmac.new(b"", value, "sha256").hexdigest().startswith(shown[name][:8])
    # A store with another key gives other fingerprints for the same values.
    (tmp_path / "other").mkdir(mode=0o700)
    other = StateStore.open(tmp_path / "other")
    try:
        KeyAge(other, Records(), Clock(T0)).adopt(runtime(creds_dir))
        assert {a.name: a.fingerprint for a in other.credentials.all()} != shown
    finally:
        other.close()


def test_unwrap_returns_the_built_providers(creds_dir: Path, store: StateStore) -> None:
    built = runtime(creds_dir)
    served = KeyAge(store, Records(), Clock(T0)).adopt(built)
    assert dict(unwrap(served).providers) == dict(built.providers)


@pytest.mark.parametrize(
    ("value", "now", "uid"),
    [
        ("1000@1800000000.0", T0 + 60, "1000"),
        ("0@1800000000.0", T0, "0"),
        ("1000@1800000000.0", T0 + DAY + 1, None),  # abandoned: a day old
        ("1000@1800000000.0", T0 - 60, None),  # from the future
        ("1000", T0, None),
        ("x@1800000000.0", T0, None),
        ("1000@soon", T0, None),
        (None, T0, None),
    ],
)
def test_announced_by_only_a_fresh_announcement(
    value: str | None, now: float, uid: str | None
) -> None:
    assert announced_by(value, now) == uid


def test_abandoned_announcement_names_no_one(creds_dir: Path, store: StateStore) -> None:
    clock, rec = Clock(T0), Records()
    keyage = KeyAge(store, rec, clock)
    keyage.adopt(runtime(creds_dir))
    announce(store, load_config(CONFIG), "gitea-token", 1000, T0)
    (creds_dir / "gitea-token").write_text("a-later-value\n")
    clock.now = T0 + 3 * DAY
    keyage.adopt(runtime(creds_dir))
    (rotated,) = rec.of(Event.CREDENTIAL_ROTATED)
    assert rotated[2]["TURRET_OPERATOR_UID"] is None
