"""The journald sink in a real systemd: every record arrives whole, and `bench.journald` can time
it, one record at a time and with the proxy path at saturation (issue 17). Boots a machine of its
own from the e2e image."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from bench import journald


def test_journal_sink_records_arrive_whole_and_are_timed(e2e_image: tuple[Path, Path]) -> None:
    """The fixture skips (or, under CI, fails) where no container can boot."""
    figures = journald.measure(records=200, rounds=2, image=e2e_image)
    assert figures["journal"] == {"count": 400, "complete": True}
    for sink in ("journald", "file"):
        assert float(figures[sink]["median_us"]) > 0  # type: ignore[arg-type]


@pytest.mark.skipif(
    any(shutil.which(t) is None for t in ("wrk", "nginx")),
    reason="the saturation scenario needs wrk and nginx (installed by `make bench`)",
)
def test_saturation_with_each_sink_in_a_systemd_service(e2e_image: tuple[Path, Path]) -> None:
    """Turret as a systemd service under wrk, auditing to journald, then to a file: every
    request answered, every answered request's decision in the journal or the file, and no
    canary in either (`saturate` raises otherwise)."""
    figures = journald.measure(records=10, rounds=1, image=e2e_image, saturation=(1, 1))
    runs = figures["saturation"]["runs"]
    for sink in ("journald", "file"):
        run = runs[sink]  # type: ignore[index]
        assert run["failed"] == 0
        assert run["requests"][0] > 0
        assert run["records"][0] >= run["requests"][0]
    assert isinstance(figures["saturation"]["per_record_us"], float)
