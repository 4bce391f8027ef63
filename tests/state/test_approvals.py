"""Approvals: single decisions, single-use execution bound to the call, expiry."""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable

import pytest

from turret.state import Approval, StateStore

CALL = hashlib.sha256(b'{"capability": "proxmox.stop", "params": {"vmid": 101}}').hexdigest()
OTHER_CALL = hashlib.sha256(b'{"capability": "proxmox.stop", "params": {"vmid": 102}}').hexdigest()


def request(store: StateStore, approval_id: str = "ap1", expires: float = 100.0) -> Approval:
    return store.approvals.create(
        approval_id, call_hash=CALL, agent="alice", capability="proxmox.stop",
        params_summary=json.dumps({"vmid": 101}), created=10.0, expires=expires,
    )


def test_approvals_pending_then_approved_then_executed_once(store: StateStore) -> None:
    created = request(store)
    assert created.status == "pending"
    assert [a.id for a in store.approvals.pending()] == ["ap1"]
    decided = store.approvals.decide("ap1", approve=True, approver_uid=0, at=20.0)
    assert decided is not None
    assert (decided.status, decided.approver_uid, decided.decided_at) == ("approved", 0, 20.0)
    assert store.approvals.pending() == []
    assert store.approvals.mark_executed("ap1", CALL, 30.0) is True
    assert store.approvals.mark_executed("ap1", CALL, 31.0) is False
    store.approvals.record_result("ap1", 200)
    done = store.approvals.get("ap1")
    assert done is not None
    assert (done.status, done.executed_at, done.result_status) == ("executed", 30.0, 200)


def test_approvals_decided_once(store: StateStore) -> None:
    request(store)
    denied = store.approvals.decide("ap1", approve=False, approver_uid=1000, at=20.0,
                                    reason="not in prod")
    assert denied is not None
    assert (denied.status, denied.reason) == ("denied", "not in prod")
    assert store.approvals.decide("ap1", approve=True, approver_uid=0, at=21.0) is None
    assert store.approvals.mark_executed("ap1", CALL, 22.0) is False
    assert store.approvals.decide("unknown", approve=True, approver_uid=0, at=21.0) is None


def test_approvals_execute_needs_the_same_call(store: StateStore) -> None:
    """Replaying an approval id for another call is refused, and leaves the approval usable."""
    request(store)
    store.approvals.decide("ap1", approve=True, approver_uid=0, at=20.0)
    assert store.approvals.mark_executed("ap1", OTHER_CALL, 25.0) is False
    assert store.approvals.mark_executed("ap1", CALL, 26.0) is True


def test_approvals_execute_needs_approval(store: StateStore) -> None:
    request(store)
    assert store.approvals.mark_executed("ap1", CALL, 20.0) is False


def test_approvals_concurrent_execute_wins_once(open_store: Callable[[], StateStore]) -> None:
    stores = [open_store(), open_store()]
    request(stores[0])
    stores[0].approvals.decide("ap1", approve=True, approver_uid=0, at=20.0)
    wins: list[bool] = []
    start = threading.Barrier(8)

    def worker(n: int) -> None:
        start.wait()
        wins.append(stores[n % 2].approvals.mark_executed("ap1", CALL, 30.0))

    pool = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    assert sorted(wins) == [False] * 7 + [True]


@pytest.mark.parametrize("approve_first", [False, True])
def test_approvals_expire(store: StateStore, approve_first: bool) -> None:
    request(store, expires=100.0)
    if approve_first:
        store.approvals.decide("ap1", approve=True, approver_uid=0, at=50.0)
    assert store.approvals.expire(99.9) == []
    assert store.approvals.expire(100.0) == ["ap1"]
    assert store.approvals.mark_executed("ap1", CALL, 60.0) is False
    assert store.approvals.decide("ap1", approve=True, approver_uid=0, at=60.0) is None
    expired = store.approvals.get("ap1")
    assert expired is not None
    assert expired.status == "expired"


def test_approvals_time_is_checked_before_expire_runs(store: StateStore) -> None:
    """A decision or an execution after `expires` fails even if `expire` has not run yet."""
    request(store, expires=100.0)
    assert store.approvals.decide("ap1", approve=True, approver_uid=0, at=100.0) is None
    request(store, "ap2", expires=100.0)
    store.approvals.decide("ap2", approve=True, approver_uid=0, at=50.0)
    assert store.approvals.mark_executed("ap2", CALL, 100.0) is False


def test_approvals_survive_restart(open_store: Callable[[], StateStore]) -> None:
    first = open_store()
    request(first)
    first.close()
    assert [a.id for a in open_store().approvals.pending()] == ["ap1"]


def test_approvals_prune_keeps_open_ones(store: StateStore) -> None:
    request(store, "open")
    request(store, "denied")
    store.approvals.decide("denied", approve=False, approver_uid=0, at=20.0)
    assert store.approvals.prune(before=11.0) == 1
    assert store.approvals.get("open") is not None
    assert store.approvals.get("denied") is None


def test_approvals_refuse_a_bad_call_hash(store: StateStore) -> None:
    with pytest.raises(ValueError, match="SHA-256"):
        store.approvals.create("x", call_hash="proxmox.stop 101", agent="a", capability="c",
                               params_summary="{}", created=1.0, expires=2.0)
