"""The audit chain's test bench: a real `Auditor` over a sink that keeps its records, a real
state store in a temporary directory, and runs of Turret's chain started and stopped on them
(`start_chain`/`stop_chain`, as `serve` does) — cleanly, or cut off as a crash would."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from turret.audit import Auditor
from turret.auditseal import start_chain, stop_chain
from turret.records import Event
from turret.state import StateStore

KEY = b"chain-key-for-tests-7c1f0e9b2a"


class ListSink:
    """Keeps every record as the file sink writes it: MESSAGE and the fields."""

    def __init__(self) -> None:
        self.records: list[dict[str, object]] = []

    def write(self, message: str, fields: dict[str, str]) -> None:
        self.records.append({"MESSAGE": message, **fields})


@dataclass
class Trail:
    """Runs of a chained Turret on one state directory; `records` is everything written."""

    state_dir: Path
    key: bytes = KEY
    every: int = 4
    sink: ListSink = field(default_factory=ListSink)

    @property
    def records(self) -> list[dict[str, object]]:
        return self.sink.records

    def run(self, n: int, *, clean: bool = True, agent: str = "opencode") -> Auditor:
        """One run writing `n` decision records; a crash when not `clean` (no stop)."""
        store = StateStore.open(self.state_dir)
        auditor = Auditor(self.sink)
        start_chain(auditor, self.key, store, every=self.every)
        for i in range(n):
            auditor.record(
                Event.DECISION, f"{agent}: allow - rule {i}",
                {"TURRET_AGENT": agent, "TURRET_DECISION": "allow", "TURRET_PATH": f"/p/{i}"},
            )  # fmt: skip
        if clean:
            stop_chain(auditor, store)
        store.close()
        return auditor

    def lines(self) -> str:
        return "".join(json.dumps(r) + "\n" for r in self.records)


@pytest.fixture
def trail(tmp_path: Path) -> Iterator[Trail]:
    directory = tmp_path / "state"
    directory.mkdir(mode=0o700)
    yield Trail(directory)
