"""The benchmark harness works end to end on a tiny load, and leaves no process behind.

No figure is asserted: speed depends on the machine. What is checked is that every scenario
produced results (or said why not), no canary credential leaked, and every child is gone, also
after Ctrl-C in the middle of a run.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TOOLS = ("wrk", "nginx", "systemd-socket-activate")

pytestmark = pytest.mark.skipif(
    any(shutil.which(t) is None for t in TOOLS),
    reason=f"the benchmark needs {', '.join(TOOLS)} (installed by `make bench`)",
)


def _bench(out: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(  # noqa: S603 - our own interpreter and arguments
        [sys.executable, "-m", "bench", "--smoke", "--out", str(out)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _alive(pid: int) -> bool:
    """True if `pid` runs (a zombie does not count: it has exited)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def _pids(out: Path) -> list[int]:
    path = out / "pids"
    return [int(line) for line in path.read_text().split()] if path.exists() else []


def _canaries(out: Path) -> list[str]:
    creds = out / "work" / "credentials"
    return [p.read_text() for p in creds.iterdir()]


def test_bench_smoke_measures_every_scenario_and_cleans_up(tmp_path: Path) -> None:
    proc = _bench(tmp_path)
    output, _ = proc.communicate(timeout=55)
    assert proc.returncode == 0, output
    results = json.loads((tmp_path / "results.json").read_text())
    by_name = {row["name"]: row for row in results["scenarios"]}
    assert set(by_name) == {"direct", "turret-proxy", "turret-capability"}
    for name in ("direct", "turret-proxy"):
        row = by_name[name]
        assert row["unavailable"] is None
        assert row["saturation"]["requests"] > 0
        assert row["saturation"]["failed"] == 0
        assert row["rate"]["sent"] > 0
        assert row["rate"]["failed"] == 0
        assert row["rate"]["leaks"] == 0
        assert row["rss_idle_kib"] > 0
    capability = by_name["turret-capability"]
    assert capability["unavailable"] or capability["saturation"]["requests"] > 0
    assert results["cold_start_ms"] and all(ms > 0 for ms in results["cold_start_ms"])
    assert results["reload"]["sighups"] >= 1
    assert results["policy"][0]["decide_agents_us"] > 0
    assert results["canary_leaks"] == []
    assert (tmp_path / "RESULTS.md").read_text().count("| Turret proxy |") == 1

    pids = _pids(tmp_path)
    assert len(pids) >= 5  # upstream, Turret, wrk, cold start, reload at least
    assert [p for p in pids if _alive(p)] == []
    everything = output + (tmp_path / "results.json").read_text()
    everything += (tmp_path / "RESULTS.md").read_text()
    for canary in _canaries(tmp_path):
        assert canary not in everything


def test_bench_interrupted_stops_every_child(tmp_path: Path) -> None:
    proc = _bench(tmp_path)
    deadline = time.monotonic() + 30
    # The upstream and Turret are both up once two children are recorded.
    while len(_pids(tmp_path)) < 2 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "the smoke run ended before it could be interrupted"
    assert any(_alive(p) for p in _pids(tmp_path))
    proc.send_signal(signal.SIGINT)
    output, _ = proc.communicate(timeout=30)
    assert proc.returncode == 130, output
    pids = _pids(tmp_path)
    assert pids
    assert [p for p in pids if _alive(p)] == [], output
