"""Derived tokens: the tree, atomic use counting, cascade revocation and pruning."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest

from turret.auth import new_token, token_sha256
from turret.state import DerivedToken, NewToken, StateStore, Tokens


def mint(tokens: Tokens, token_id: str, parent: str | None = None, *, agent: str = "alice",
         expires: float = 1000.0, max_uses: int | None = None) -> DerivedToken:
    """Record a token with a fresh random value (only its digest reaches the store)."""
    return tokens.insert(NewToken(
        id=token_id, digest=token_sha256(new_token()), agent=agent, parent_id=parent,
        scope='{"capabilities": []}', created=1.0, expires=expires, max_uses=max_uses,
        may_derive=True, description=f"test {token_id}",
    ))


def test_tokens_found_by_digest_of_the_token(store: StateStore) -> None:
    token = new_token()
    store.tokens.insert(NewToken("t1", token_sha256(token), "alice", None, "{}", 1.0, 9.0, 5,
                                 False, "triage"))
    found = store.tokens.by_digest(token_sha256(token))
    assert found is not None
    assert (found.id, found.agent, found.depth, found.may_derive) == ("t1", "alice", 1, False)
    assert found.uses_left() == 5
    assert store.tokens.by_digest(token_sha256(new_token())) is None


@pytest.mark.parametrize("digest", ["turret_" + "A" * 43, "AB" * 32, "ab" * 31, "zz" * 32, ""])
def test_tokens_refuse_anything_but_a_digest(store: StateStore, digest: str) -> None:
    """A token passed by mistake where its digest belongs is refused, not stored."""
    with pytest.raises(ValueError, match="digest"):
        store.tokens.insert(NewToken("t1", digest, "alice", None, "{}", 1.0, 9.0, None, False))
    assert store.tokens.get("t1") is None


def test_tokens_child_takes_depth_from_parent(store: StateStore) -> None:
    mint(store.tokens, "a")
    mint(store.tokens, "b", "a", expires=900.0)
    c = mint(store.tokens, "c", "b", expires=800.0)
    assert c.depth == 3
    assert [t.id for t in store.tokens.ancestry("c")] == ["a", "b", "c"]
    assert [t.id for t in store.tokens.descendants("a")] == ["b", "c"]
    assert store.tokens.descendants("c") == []


@pytest.mark.parametrize(
    ("parent", "agent", "expires", "why"),
    [
        ("nope", "alice", 10.0, "not recorded"),
        ("a", "bob", 10.0, "parent's agent"),
        ("a", "alice", 1000.5, "expire first"),
    ],
)
def test_tokens_refuse_a_child_that_breaks_the_tree(
    store: StateStore, parent: str, agent: str, expires: float, why: str
) -> None:
    mint(store.tokens, "a")
    with pytest.raises(ValueError, match=why):
        mint(store.tokens, "x", parent, agent=agent, expires=expires)
    assert store.tokens.get("x") is None


def test_tokens_scope_must_be_json(store: StateStore) -> None:
    with pytest.raises(Exception, match="CHECK constraint"):
        store.tokens.insert(NewToken("t", "ab" * 32, "alice", None, "{not json", 1.0, 9.0, None,
                                     False))


def test_tokens_use_counts_to_max_uses(store: StateStore) -> None:
    mint(store.tokens, "t", max_uses=2)
    assert [store.tokens.use("t") for _ in range(4)] == [1, 2, None, None]
    assert store.tokens.use("unknown") is None
    mint(store.tokens, "zero", max_uses=0)
    assert store.tokens.use("zero") is None


def _hammer(uses: Callable[[], int | None], threads: int, calls: int) -> list[int]:
    """Call `uses` from many threads at once; return every count that was granted."""
    granted: list[int] = []
    lock = threading.Lock()
    start = threading.Barrier(threads)

    def worker() -> None:
        start.wait()
        mine = [n for n in (uses() for _ in range(calls)) if n is not None]
        with lock:
            granted.extend(mine)

    pool = [threading.Thread(target=worker) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return granted


def test_tokens_concurrent_use_never_overuses(store: StateStore) -> None:
    mint(store.tokens, "t", max_uses=57)
    granted = _hammer(lambda: store.tokens.use("t"), threads=16, calls=10)
    assert sorted(granted) == list(range(1, 58))
    token = store.tokens.get("t")
    assert token is not None
    assert token.uses == 57


def test_tokens_concurrent_use_across_connections(open_store: Callable[[], StateStore]) -> None:
    """Two stores on one file (two processes' worth of connections) still share one count."""
    first, second = open_store(), open_store()
    mint(first.tokens, "t", max_uses=40)
    stores = [first, second]
    picks = iter(range(10**6))
    granted = _hammer(lambda: stores[next(picks) % 2].tokens.use("t"), threads=8, calls=10)
    assert sorted(granted) == list(range(1, 41))


def test_tokens_unlimited_use_counts_every_call(store: StateStore) -> None:
    mint(store.tokens, "t")
    granted = _hammer(lambda: store.tokens.use("t"), threads=8, calls=25)
    assert sorted(granted) == list(range(1, 201))


def _tree(tokens: Tokens) -> None:
    """a -> b -> c -> d (four levels), a -> e, and f, another root of the same agent."""
    mint(tokens, "a")
    mint(tokens, "b", "a")
    mint(tokens, "c", "b")
    mint(tokens, "d", "c")
    mint(tokens, "e", "a")
    mint(tokens, "f")


def test_tokens_revoke_cascades_over_levels(store: StateStore) -> None:
    _tree(store.tokens)
    assert store.tokens.revoke_subtree("b", "agent:alice", 50.0) == ["b", "c", "d"]
    for tid in ("b", "c", "d"):
        t = store.tokens.get(tid)
        assert t is not None
        assert (t.revoked_at, t.revoked_by) == (50.0, "agent:alice")
    for tid in ("a", "e", "f"):
        t = store.tokens.get(tid)
        assert t is not None
        assert t.revoked_at is None
    # Revoking the root now reaches what is left, and keeps the earlier revocations as they were.
    assert store.tokens.revoke_subtree("a", "uid:0", 60.0) == ["a", "e"]
    d = store.tokens.get("d")
    assert d is not None
    assert d.revoked_by == "agent:alice"
    assert store.tokens.revoke_subtree("a", "uid:0", 70.0) == []
    assert store.tokens.revoke_subtree("unknown", "uid:0", 70.0) == []


def test_tokens_revoke_by_agent_and_all(store: StateStore) -> None:
    _tree(store.tokens)
    mint(store.tokens, "g", agent="bob")
    assert store.tokens.revoke_agent_tokens("alice", "uid:0", 5.0) == ["a", "b", "c", "d", "e",
                                                                        "f"]
    assert store.tokens.in_force(2.0) == 1
    assert store.tokens.revoke_all("killswitch", 6.0) == ["g"]
    assert store.tokens.in_force(2.0) == 0


def test_tokens_list_by_agent(store: StateStore) -> None:
    _tree(store.tokens)
    mint(store.tokens, "g", agent="bob")
    assert [t.id for t in store.tokens.by_agent("alice")] == ["a", "b", "c", "d", "e", "f"]
    assert [t.id for t in store.tokens.by_agent("bob")] == ["g"]


def test_tokens_prune_expired(store: StateStore) -> None:
    mint(store.tokens, "old", expires=10.0)
    mint(store.tokens, "old-child", "old", expires=10.0)
    mint(store.tokens, "live", expires=100.0)
    mint(store.tokens, "live-short-child", "live", expires=20.0)
    assert store.tokens.in_force(5.0) == 4
    assert store.tokens.prune_expired(30.0) == ["live-short-child", "old", "old-child"]
    assert [t.id for t in store.tokens.by_agent("alice")] == ["live"]
    assert store.tokens.prune_expired(30.0) == []


def test_tokens_in_force_leaves_out_a_used_up_token(store: StateStore) -> None:
    mint(store.tokens, "once", max_uses=1)
    mint(store.tokens, "open")
    assert store.tokens.in_force(2.0) == 2
    assert store.tokens.use("once") == 1
    assert store.tokens.in_force(2.0) == 1  # as `DerivedToken.uses_left` says: none left
