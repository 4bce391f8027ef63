"""`python -m bench`: run every scenario and extra measurement, print and write the results.

The full run (`make bench`) takes several minutes and updates bench/RESULTS.md, bench/latency.png
and the figures in README.md. Scenarios are measured in interleaved rounds, so that the load of a
shared machine hits each alike, and ratios are taken round by round. `--quick` (two short rounds,
for iterating on a change), `--smoke` (a tiny subset in seconds) and `--only` write only under
`--out`. The test suite uses `--smoke` to check that the harness works and leaves no process
behind. `--profile` adds py-spy profiles of the Python servers at saturation (`bench.profile`
summarises them). `python -m bench.stages` times each stage of a request in-process.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path
from types import FrameType

from bench import report, stages
from bench.extras import (
    Extras,
    ReloadPlan,
    check_config,
    cold_start,
    policy_scale,
    reload_under_load,
)
from bench.procs import Procs
from bench.scenarios import SCENARIOS, Settings, run_scenarios
from bench.servers import Workdir, start_upstream

HERE = Path(__file__).parent
FULL = Settings()
QUICK = Settings(saturation_s=2, rate_s=3, held_connections=200, rounds=2)
SMOKE = Settings(
    warmup_s=0,
    saturation_s=1,
    rate_s=0.5,
    capacity_rate=200,
    held_connections=20,
    connections=16,
    rounds=1,
)
SMOKE_SCENARIOS = ("direct", "turret-proxy", "turret-capability")
TOOLS = ("wrk", "nginx", "systemd-socket-activate")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument("--smoke", action="store_true", help="a tiny, fast subset; writes only --out")
    p.add_argument("--quick", action="store_true", help="two short rounds; writes only --out")
    p.add_argument("--out", default=str(HERE / "out"), help="work files, logs, results.json")
    p.add_argument("--only", help="comma-separated scenario names (default: all)")
    p.add_argument(
        "--profile",
        action="store_true",
        help="record Turret and the baseline with py-spy at saturation (profiles in --out)",
    )
    p.add_argument("--cold-runs", type=int, help="cold starts to time (default 7; smoke 1)")
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; 0 when it ran to the end (targets missed or not), else 1."""
    args = _parser().parse_args(argv)
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        print(f"bench: missing {', '.join(missing)}: run `make bench`", file=sys.stderr)
        return 1
    settings = SMOKE if args.smoke else QUICK if args.quick else FULL
    mode = "smoke" if args.smoke else "quick" if args.quick else "full"
    if args.profile:
        settings = replace(settings, profile_dir=Path(args.out).resolve())
    names = args.only.split(",") if args.only else SMOKE_SCENARIOS if args.smoke else None
    scenarios = [s for s in SCENARIOS if names is None or s.name in names]
    out = Path(args.out)
    shutil.rmtree(out / "work", ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    (out / "pids").unlink(missing_ok=True)
    work = Workdir.create(out / "work")
    _raise_fd_limit()
    signal.signal(signal.SIGTERM, _interrupt)
    started = time.monotonic()
    results: report.Results = {
        "mode": mode,
        "when": time.strftime("%Y-%m-%d %H:%M %Z"),
        "machine": report.machine(),
        "versions": report.versions(),
        "settings": {k: v for k, v in asdict(settings).items() if k != "profile_dir"},
    }
    _say(f"load average {results['machine']['load_before']}")
    extra = Extras()
    with Procs(work.logs, out / "pids") as procs:
        upstream = start_upstream(procs, work)
        outcomes = run_scenarios(procs, work, upstream, scenarios, settings, say=_say)
        results["scenarios"] = [report.scenario_figures(o) for o in outcomes]
        for outcome, row in zip(outcomes, results["scenarios"], strict=True):
            _say(f"{outcome.scenario.label}: {_one_line(row)}")
            for note in outcome.notes:
                _say(f"{outcome.scenario.label}: {note}")
        cold_runs = args.cold_runs if args.cold_runs is not None else {"smoke": 1}.get(mode, 7)
        _say(f"cold start: {cold_runs} runs each, Turret and the baseline alternating")
        extra.cold_ms, extra.baseline_cold_ms = [], []
        for _ in range(cold_runs):
            extra.cold_ms += cold_start(procs, work, upstream, 1)
            extra.baseline_cold_ms += cold_start(procs, work, upstream, 1, baseline=True)
        _say("reload under load")
        plan = ReloadPlan(sighups=2, interval=0.25) if args.smoke else ReloadPlan()
        extra.reload = reload_under_load(procs, work, upstream, plan)
    _say("policy scale")
    extra.policy = policy_scale((10,) if args.smoke else (10, 1_000, 10_000))
    agents = {"smoke": 100, "quick": 1_000}.get(mode, 10_000)
    _say(f"check-config of {agents:,} agents")
    extra.check_config = check_config(work, agents, 1 if args.smoke else 3)
    _say("stages, in-process")
    extra.stages = stages.run({"smoke": 50, "quick": 300}.get(mode, 2000), journal=False).figures()
    results["machine"]["load_after"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    results["elapsed_s"] = time.monotonic() - started
    results["canary_leaks"] = _canary_leaks(work)
    report.summarise(results, extra)
    latencies = {o.scenario.label: o.rate.latencies_ms for o in outcomes if o.rate is not None}
    # Only a complete run updates the published results; a partial one writes under --out.
    _write(results, latencies, out, publish=mode == "full" and not args.only)
    return 0


def _write(
    results: report.Results, latencies: dict[str, list[float]], out: Path, *, publish: bool
) -> None:
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print("\n" + report.markdown(results) + "\n", flush=True)
    plot = HERE / "latency.png" if publish else out / "latency.png"
    rps = {r["label"]: r["saturation"]["rps"] for r in results["scenarios"] if "saturation" in r}
    try:
        from bench.plot import write_plot  # noqa: PLC0415 - needs matplotlib (the bench extra)

        write_plot(plot, latencies, rps, results)
        _say(f"plot written to {plot}")
    except ImportError:
        _say("matplotlib is not installed (pip install -e '.[bench]'): no plot")
    target = HERE / "RESULTS.md" if publish else out / "RESULTS.md"
    if not report.replace_block(target, report.markdown(results)):
        target.write_text(
            f"# Benchmark results\n\n{report.BEGIN}\n{report.markdown(results)}\n{report.END}\n"
        )
    _say(f"results written to {target}")
    if publish and report.replace_block(
        HERE.parent / "README.md",
        report.summary_line(results),
        report.SUMMARY_BEGIN,
        report.SUMMARY_END,
    ):
        _say("README.md figures updated")


def _canary_leaks(work: Workdir) -> list[str]:
    """Files among logs and audit records that contain a canary credential value."""
    files = [*work.logs.iterdir(), work.audit_file]
    return [
        f.name
        for f in files
        if f.is_file() and any(c.encode() in f.read_bytes() for c in work.canaries)
    ]


def _one_line(row: report.Results) -> str:
    if row["unavailable"]:
        return f"not yet available ({row['unavailable']})"
    sat, rate = row["saturation"], row["rate"]
    runs = ", ".join(f"{r:,.0f}" for r in sat["runs_rps"])
    return (
        f"{sat['rps']:,.0f} rps at saturation, median of {runs} ({sat['failed']} failed); at the "
        f"fixed rate p50 {rate['p50_ms']:.2f} ms, p99 {rate['p99_ms']:.2f} ms "
        f"({rate['failed']} failed)"
    )


def _say(text: str) -> None:
    print(f"bench: {text}", flush=True)


def _raise_fd_limit() -> None:
    """Room for the held connections, in the harness and in the servers it starts."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 65536 if hard == resource.RLIM_INFINITY else min(hard, 65536)
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("bench: interrupted; every process it started has been stopped", file=sys.stderr)
        sys.exit(130)
