"""`python -m bench.journald`: what an audit record costs with journald, next to the file sink.

Production audits to journald (`JournalSink`, systemd-python's `journal.send` over the journal's
socket). The host here runs no journald, so this boots a real systemd in a container with the
e2e machinery (`tests/e2e/nspawn_machine.py`: needs root and a cached root filesystem) and times
`Auditor.record` there, a typical decision record at a time, with `JournalSink` and with
`LineSink` to a file, in alternating rounds. Prints µs per record (median of the rounds).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

from bench import journald_load
from tests.e2e.nspawn_machine import (
    REPO,
    SRC_IN_MACHINE,
    VENV_IN_MACHINE,
    booted,
    missing_prerequisites,
    rootfs,
    venv,
)

CACHE = Path(os.environ.get("TURRET_E2E_CACHE", Path.home() / ".cache" / "turret-e2e"))
# Runs inside the machine, on Turret's own sinks; prints one JSON line.
PROBE = """
import json, statistics, sys, time
from turret.audit import Auditor, JournalSink, LineSink
from turret.records import Event
records, rounds = int(sys.argv[1]), int(sys.argv[2])
fields = {
    "TURRET_REQUEST_ID": "3051464eaa2b3d4f", "TURRET_METHOD": "GET",
    "TURRET_PATH": "/api/items/42", "TURRET_SERVICE": "bench", "TURRET_AGENT": "bench-agent",
    "TURRET_DECISION": "allow", "TURRET_REASON": "GET /api/items/* on bench granted",
    "TURRET_RULE": "agents.bench-agent.proxy[0]", "TURRET_STATUS": None,
}
message = "bench-agent: allow - GET /api/items/* on bench granted"
sinks = {"journald": Auditor(JournalSink()), "file": Auditor(LineSink.open("/var/tmp/a.jsonl"))}
out = {name: [] for name in sinks}
for _ in range(rounds):
    for name, auditor in sinks.items():
        started = time.perf_counter()
        for _ in range(records):
            auditor.record(Event.DECISION, message, fields)
        out[name].append((time.perf_counter() - started) / records * 1e6)
print(json.dumps({k: {"median_us": statistics.median(v), "runs_us": v} for k, v in out.items()}))
"""
CHECK = """
import json, subprocess, sys
out = subprocess.run(
    ["journalctl", "--no-pager", "-o", "json", "SYSLOG_IDENTIFIER=turret", "TURRET_EVENT=decision"],
    capture_output=True, text=True, check=True,
).stdout
records = [json.loads(line) for line in out.splitlines() if line.strip()]
fields = ("MESSAGE", "MESSAGE_ID", "PRIORITY", "TURRET_RULE", "TURRET_PATH")
complete = all(all(f in r for f in fields) for r in records)
print(json.dumps({"count": len(records), "complete": complete}))
"""


def measure(
    records: int,
    rounds: int,
    image: tuple[Path, Path] | None = None,
    saturation: tuple[int, int] | None = None,
) -> dict[str, dict[str, object]]:
    """µs per record for each sink, measured in a container booted from `image` (root
    filesystem and venv; default: the e2e cache); and whether every record reached the journal
    whole (`journal`). With `saturation` (rounds per sink, seconds each), also the proxy path at
    saturation in the same container with each sink (`saturation`, see `bench.journald_load`)."""
    missing = missing_prerequisites()
    if missing:
        raise RuntimeError("cannot boot a systemd container here; missing: " + ", ".join(missing))
    root, env = image or (rootfs(CACHE), venv(CACHE))
    with tempfile.TemporaryDirectory(prefix="turret-journald-") as tmp:
        (Path(tmp) / "probe.py").write_text(PROBE)
        (Path(tmp) / "check.py").write_text(CHECK)
        binds = [
            (env, VENV_IN_MACHINE, True),
            (REPO / "turret", f"{SRC_IN_MACHINE}/turret", True),
            (Path(tmp), journald_load.IN_MACHINE, False),
        ]
        name = f"turret-bench-journald-{os.getpid()}"
        with booted(name, root, binds, Path(tmp) / "console.log") as machine:
            python = f"{VENV_IN_MACHINE}/bin/python"
            result = machine.run(python, "/bench/probe.py", str(records), str(rounds), timeout=600)
            machine.run("journalctl", "--flush", "--sync")
            check = machine.run(python, "/bench/check.py")
            if saturation is not None:
                load = journald_load.saturate(
                    machine, Path(tmp), rounds=saturation[0], duration=saturation[1]
                )
    figures: dict[str, dict[str, object]] = json.loads(result.stdout.strip().splitlines()[-1])
    if saturation is not None:
        figures["saturation"] = {
            "runs": {sink: asdict(r) for sink, r in load.items()},
            "per_record_us": journald_load.per_record_us(load),
        }
    # Every record must have reached the journal whole, or the timing means nothing.
    figures["journal"] = json.loads(check.stdout.strip().splitlines()[-1])
    return figures


def main(argv: list[str] | None = None) -> int:
    """Print the per-record cost of each sink."""
    p = argparse.ArgumentParser(prog="python -m bench.journald", description=__doc__)
    p.add_argument("--records", type=int, default=5000, help="records per round (default 5000)")
    p.add_argument("--rounds", type=int, default=5, help="rounds per sink (default 5)")
    p.add_argument(
        "--saturation-rounds", type=int, default=3,
        help="saturation rounds per sink, alternating (default 3; 0: none)",
    )  # fmt: skip
    p.add_argument("--saturation-s", type=int, default=5, help="seconds each (default 5)")
    args = p.parse_args(argv)
    load = (args.saturation_rounds, args.saturation_s) if args.saturation_rounds else None
    figures = measure(args.records, args.rounds, saturation=load)
    journal = figures.pop("journal")
    print(f"records in the journal: {journal['count']}, every field present: {journal['complete']}")
    saturated = figures.pop("saturation", None)
    for sink, f in figures.items():
        runs = ", ".join(f"{r:.1f}" for r in f["runs_us"])  # type: ignore[attr-defined]
        print(f"{sink}: {f['median_us']:.1f} µs per record (rounds: {runs})")
    if saturated is not None:
        print("proxy path at saturation in the container (wrk -t1 -c64), Turret a systemd service:")
        for sink, r in saturated["runs"].items():  # type: ignore[attr-defined]
            rps = ", ".join(f"{x:,.0f}" for x in r["rps"])
            print(
                f"  {sink} sink: {statistics.median(r['rps']):,.0f} requests/s"
                f" (rounds: {rps}; {sum(r['requests']):,} requests, {r['failed']} failed,"
                f" {sum(r['records']):,} decision records)"
            )
        print(
            f"  journald record - file record: {saturated['per_record_us']:+.1f} µs at saturation"
            " (the difference in time per request, over the two records of each)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
