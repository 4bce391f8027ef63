"""The seal, agent revocations, the audit chain head and meta values."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from turret.state import ChainHead, Seal, StateStore, by_uid


def test_controls_seal_keeps_the_first_seal(store: StateStore) -> None:
    assert store.controls.sealed() is None
    first = store.controls.seal("agent compromised", by_uid(0), 10.0)
    assert first == Seal("agent compromised", "uid:0", 10.0)
    assert store.controls.seal("again", "heartbeat", 20.0) == first
    assert store.controls.sealed() == first


def test_controls_unseal(store: StateStore) -> None:
    assert store.controls.unseal() is None
    store.controls.seal("drill", by_uid(1000), 10.0)
    assert store.controls.unseal() == Seal("drill", "uid:1000", 10.0)
    assert store.controls.sealed() is None


def test_controls_revocations(store: StateStore) -> None:
    first = store.controls.revoke_agent("mallory", "token leaked", by_uid(0), 5.0)
    assert store.controls.revoke_agent("mallory", "again", by_uid(1), 6.0) == first
    store.controls.revoke_agent("eve", "left the team", by_uid(0), 7.0)
    assert set(store.controls.revoked_agents()) == {"mallory", "eve"}
    assert store.controls.revoked_agents()["mallory"].reason == "token leaked"
    assert store.controls.unrevoke_agent("mallory") is True
    assert store.controls.unrevoke_agent("mallory") is False
    assert set(store.controls.revoked_agents()) == {"eve"}


def test_audit_chain_head_advances_and_survives_restart(
    open_store: Callable[[], StateStore],
) -> None:
    store = open_store()
    assert store.audit_chain.head() is None
    store.audit_chain.advance(0, "00" * 32, 1.0)
    store.audit_chain.advance(1, "11" * 32, 2.0)
    store.close()
    assert open_store().audit_chain.head() == ChainHead(1, "11" * 32)


@pytest.mark.parametrize("seq", [5, 4, 0])
def test_audit_chain_head_never_rewinds(store: StateStore, seq: int) -> None:
    store.audit_chain.advance(5, "aa", 1.0)
    with pytest.raises(ValueError, match="does not advance"):
        store.audit_chain.advance(seq, "bb", 2.0)
    assert store.audit_chain.head() == ChainHead(5, "aa")


def test_meta_values(store: StateStore) -> None:
    assert store.meta.get("last_checkin") is None
    store.meta.set("last_checkin", "100.5", 100.5)
    store.meta.set("last_checkin", "200.5", 200.5)
    assert store.meta.get("last_checkin") == "200.5"
    assert store.meta.delete("last_checkin") is True
    assert store.meta.delete("last_checkin") is False
