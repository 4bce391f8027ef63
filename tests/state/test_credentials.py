"""Credential key age by keyed fingerprint, and batched last-used times."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from turret.state import FingerprintKey, StateStore, short


def test_fingerprint_key_made_once(state_dir: Path, open_store: Callable[[], StateStore]) -> None:
    key = (state_dir / "fingerprint.key")
    first = open_store()
    raw = key.read_bytes()
    assert len(raw) == 32
    first.close()
    again = open_store()
    assert key.read_bytes() == raw
    assert again.fingerprint_key.fingerprint(b"v") == first.fingerprint_key.fingerprint(b"v")
    assert "redacted" in repr(again.fingerprint_key)
    assert raw.hex() not in repr(again.fingerprint_key)


def test_fingerprint_is_keyed_not_a_plain_hash(tmp_path: Path, canaries: dict[str, str]) -> None:
    value = canaries["gitea-token"].encode()
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir()
    two.mkdir()
    fp_one = FingerprintKey.load_or_create(one).fingerprint(value)
    fp_two = FingerprintKey.load_or_create(two).fingerprint(value)
    assert fp_one != fp_two  # another key, another fingerprint: not a function of the value alone
    for plain in (hashlib.sha256(value), hashlib.sha1(value), hashlib.md5(value)):  # noqa: S324
        assert short(fp_one) not in plain.hexdigest()
    assert len(fp_one) == 16
    assert short(fp_one) == fp_one[:8]


def test_credentials_observe_tracks_changes(store: StateStore) -> None:
    fp = store.fingerprint_key.fingerprint
    seen = store.credentials.observe("gitea-token", fp(b"one"), 100.0)
    assert (seen.new, seen.changed) == (True, False)
    assert (seen.age.first_seen, seen.age.last_changed) == (100.0, 100.0)

    same = store.credentials.observe("gitea-token", fp(b"one"), 200.0)
    assert (same.new, same.changed) == (False, False)
    assert same.age.last_changed == 100.0

    rotated = store.credentials.observe("gitea-token", fp(b"two"), 300.0)
    assert (rotated.new, rotated.changed) == (False, True)
    assert rotated.age.previous_fingerprint == fp(b"one")
    assert rotated.age.fingerprint == fp(b"two")
    assert (rotated.age.first_seen, rotated.age.last_changed) == (100.0, 300.0)


@pytest.mark.parametrize(
    "not_a_fingerprint", ["CANARY-api-key-0123", "ABCDEF0123456789", "ab" * 32, ""]
)
def test_credentials_observe_refuses_a_value(store: StateStore, not_a_fingerprint: str) -> None:
    with pytest.raises(ValueError, match="never a value"):
        store.credentials.observe("api-key", not_a_fingerprint, 1.0)
    assert store.credentials.all() == []


def test_credentials_last_used_is_batched(open_store: Callable[[], StateStore]) -> None:
    store = open_store()
    fp = store.fingerprint_key.fingerprint
    store.credentials.observe("a", fp(b"a"), 1.0)
    store.credentials.observe("b", fp(b"b"), 1.0)
    store.credentials.touch_used("a", 10.0)
    store.credentials.touch_used("a", 30.0)
    store.credentials.touch_used("a", 20.0)  # out of order: the latest time wins
    store.credentials.touch_used("gone", 5.0)  # no longer tracked: ignored
    assert [c.last_used for c in store.credentials.all()] == [None, None]
    store.flush()
    assert [c.last_used for c in store.credentials.all()] == [30.0, None]
    store.credentials.touch_used("a", 25.0)
    store.credentials.touch_used("b", 40.0)
    store.close()  # close flushes
    ages = {c.name: c.last_used for c in open_store().credentials.all()}
    assert ages == {"a": 30.0, "b": 40.0}


def test_credentials_forget(store: StateStore) -> None:
    store.credentials.observe("a", store.fingerprint_key.fingerprint(b"a"), 1.0)
    assert store.credentials.forget("a") is True
    assert store.credentials.forget("a") is False
    assert store.credentials.all() == []


def test_fingerprint_key_created_once_under_a_race(tmp_path: Path) -> None:
    """Many openers at once all end up with the one key that was linked into place."""
    start = threading.Barrier(8)
    found: list[str] = []

    def opener() -> None:
        start.wait()
        found.append(FingerprintKey.load_or_create(tmp_path).fingerprint(b"v"))

    pool = [threading.Thread(target=opener) for _ in range(8)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    assert len(set(found)) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["fingerprint.key"]
