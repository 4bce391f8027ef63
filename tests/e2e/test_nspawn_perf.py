"""The journald sink in a real systemd: every record arrives whole, and `bench.journald` can time
it (issue 17). Boots a machine of its own from the e2e image."""

from __future__ import annotations

from pathlib import Path

from bench import journald


def test_journal_sink_records_arrive_whole_and_are_timed(e2e_image: tuple[Path, Path]) -> None:
    """The fixture skips (or, under CI, fails) where no container can boot."""
    figures = journald.measure(records=200, rounds=2, image=e2e_image)
    assert figures["journal"] == {"count": 400, "complete": True}
    for sink in ("journald", "file"):
        assert float(figures[sink]["median_us"]) > 0  # type: ignore[arg-type]
