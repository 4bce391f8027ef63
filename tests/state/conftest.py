"""Fixtures for the state store: a store in a fresh directory, and reopening it (a restart)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from turret.state import StateStore


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    """An empty state directory, as systemd's StateDirectory= makes it."""
    d = tmp_path / "state"
    d.mkdir(mode=0o700)
    return d


@pytest.fixture
def open_store(state_dir: Path) -> Iterator[Callable[[], StateStore]]:
    """Open a store on `state_dir`; every store opened is closed when the test ends."""
    opened: list[StateStore] = []

    def make() -> StateStore:
        store = StateStore.open(state_dir)
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.close()


@pytest.fixture
def store(open_store: Callable[[], StateStore]) -> StateStore:
    """An open store on a fresh directory."""
    return open_store()
