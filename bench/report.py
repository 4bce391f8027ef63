"""Results: from measurements to one JSON-ready dict, the terminal table and bench/RESULTS.md."""

from __future__ import annotations

import math
import os
import platform
import re
import statistics
import subprocess
from pathlib import Path
from typing import Any

import aiohttp

import turret
from bench import stages
from bench.extras import Extras
from bench.loadgen import RateResult, percentile
from bench.scenarios import Outcome

Results = dict[str, Any]
BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"
SUMMARY_BEGIN, SUMMARY_END = "<!-- bench:summary:begin -->", "<!-- bench:summary:end -->"
TURRET = "turret-proxy"
CAPABILITY = "turret-capability"


def machine() -> dict[str, str]:
    """What the figures were measured on."""
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.partition(":")[2].strip()
            break
    mem_kib = int(Path("/proc/meminfo").read_text().split()[1])
    os_name = "unknown"
    for line in Path("/etc/os-release").read_text().splitlines():
        if line.startswith("PRETTY_NAME="):
            os_name = line.partition("=")[2].strip('"')
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return {
        "cpu": f"{cpu}, {os.cpu_count()} cores",
        "memory": f"{mem_kib / 1024 / 1024:.1f} GiB",
        "os": f"{os_name}, Linux {platform.release()}",
        "load_before": load,
    }


def versions() -> dict[str, str]:
    """Versions of everything measured."""
    return {
        "turret": f"{turret.__version__} ({_command(['git', 'describe', '--always', '--dirty'])})",
        "python": platform.python_version(),
        "aiohttp": aiohttp.__version__,
        "nginx": _command(["nginx", "-v"]).replace("nginx version: ", ""),
        "wrk": _command(["wrk", "-v"]).split(" [")[0],
    }


def _command(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except OSError:
        return "absent"
    return (out.stdout + out.stderr).strip().splitlines()[0] if out.stdout + out.stderr else "?"


def _rate_figures(rate: RateResult) -> dict[str, Any]:
    lat = rate.latencies_ms
    return {
        "sent": len(lat) + rate.failed,
        "failed": rate.failed,
        "failures": rate.failures,
        "p50_ms": percentile(lat, 50),
        "p99_ms": percentile(lat, 99),
        "p999_ms": percentile(lat, 99.9),
        "lag_p99_ms": percentile(rate.lags_ms, 99),
        "leaks": rate.leaks,
    }


def scenario_figures(outcome: Outcome) -> dict[str, Any]:
    """The figures of one scenario, as plain values: the median saturation run (and every run's
    rate), fixed-rate latencies pooled over the rounds."""
    s = outcome.scenario
    row: dict[str, Any] = {"name": s.name, "label": s.label, "unavailable": outcome.unavailable}
    if outcome.saturations:
        runs = sorted(outcome.saturations, key=lambda r: r.rps)
        sat = runs[len(runs) // 2]
        row["saturation"] = {
            "rps": sat.rps,
            "requests": sum(r.requests for r in runs),
            "p50_ms": sat.p50_ms,
            "p99_ms": sat.p99_ms,
            "p999_ms": sat.p999_ms,
            "failed": sum(r.failed for r in runs),
            "runs_rps": [r.rps for r in outcome.saturations],  # in round order
        }
    if outcome.rate is not None:
        row["rate"] = _rate_figures(outcome.rate)
        row["rate"]["runs_p50_ms"] = [percentile(r.latencies_ms, 50) for r in outcome.rates]
        row["rate"]["runs_p99_ms"] = [percentile(r.latencies_ms, 99) for r in outcome.rates]
    if outcome.capacity is not None:
        row["capacity"] = _rate_figures(outcome.capacity)
    for key in ("rss_idle_kib", "rss_held_kib", "held_ok"):
        row[key] = getattr(outcome, key)
    return row


def summarise(results: Results, extra: Extras) -> None:
    """Add the extra measurements, ratios and target verdicts to `results`."""
    results["cold_start_ms"] = extra.cold_ms
    results["baseline_cold_start_ms"] = extra.baseline_cold_ms
    results["reload"] = extra.reload.__dict__ if extra.reload is not None else None
    results["policy"] = [row.__dict__ for row in extra.policy] if extra.policy else None
    results["check_config"] = extra.check_config.figures() if extra.check_config else None
    results["stages"] = extra.stages
    by_name = {row["name"]: row for row in results["scenarios"]}
    results["ratios"] = _ratios(by_name)
    results["added"] = {
        path: {key: _added(by_name, path, key) for key in ("p50_ms", "p99_ms")}
        for path in (TURRET, CAPABILITY)
    }
    results["targets"] = _targets(by_name, results)


def spread(values: list[float]) -> dict[str, Any]:
    """Median, lowest and highest of `values` (None for none)."""
    if not values:
        return {"median": None, "min": None, "max": None, "runs": []}
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "runs": values,
    }


def _runs(by_name: dict[str, Any], name: str) -> list[float]:
    sat = by_name.get(name, {}).get("saturation")
    return list(sat["runs_rps"]) if sat else []


def _ratios(by_name: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Throughput ratios round by round (both figures from the same round), then their spread."""
    out = {}
    for path, short in ((TURRET, "proxy"), (CAPABILITY, "capability")):
        mine = _runs(by_name, path)
        for other in ("direct", "nginx", "baseline"):
            theirs = _runs(by_name, other) if mine else []
            pairs = zip(mine, theirs, strict=True) if theirs else ()
            out[f"{short}/{other}"] = spread([m / t for m, t in pairs if t])
    return out


def _added(by_name: dict[str, Any], path: str, key: str) -> float | None:
    """Median over rounds of the path's latency minus direct's, both from the same round."""
    t, d = by_name.get(path, {}).get("rate"), by_name.get("direct", {}).get("rate")
    if not t or not d:
        return None
    runs = "runs_" + key
    diffs: list[float] = [a - b for a, b in zip(t[runs], d[runs], strict=True)]
    return statistics.median(diffs)


def _target(
    what: str, wanted: str, value: float | None, ok: bool, unit: str, *, digits: int = 2
) -> dict[str, Any]:
    return {
        "what": what,
        "target": wanted,
        "measured": value,
        "unit": unit,
        "digits": digits,
        "met": None if value is None else ok,
    }


def _over(value: float | None, base: float | None) -> float | None:
    return value / base if value is not None and base else None


def _median(values: list[float] | None) -> float | None:
    return statistics.median(values) if values else None


def _targets(by_name: dict[str, Any], results: Results) -> list[dict[str, Any]]:
    """The issue's targets, each as a ratio to another scenario of the same run."""
    ratios, added = results["ratios"], results["added"]
    rate = f"at {results['settings']['rate']:g} requests/s over direct"
    out = []
    for short, wanted in (("proxy", 0.8), ("capability", 0.7)):
        got = ratios[f"{short}/baseline"]["median"]
        out.append(
            _target(
                f"throughput, {short} / aiohttp baseline (median of rounds)",
                f">= {wanted}",
                got,
                (got or 0) >= wanted,
                "x",
            )
        )
    for path, short in ((TURRET, "proxy"), (CAPABILITY, "capability")):
        p50, p99 = added[path]["p50_ms"], added[path]["p99_ms"]
        out.append(_target(f"added p50 {rate}, {short}", "<= 0.3 ms", p50, (p50 or 0) <= 0.3, "ms"))
        out.append(_target(f"added p99 {rate}, {short}", "<= 1.5 ms", p99, (p99 or 0) <= 1.5, "ms"))
    capacity = by_name.get(CAPABILITY, {}).get("capacity")
    cap_p99 = capacity["p99_ms"] if capacity and not capacity["failed"] else None
    out.append(
        _target(
            f"capability p99 at {results['settings']['capacity_rate']:g} requests/s",
            "< 5 ms",
            cap_p99,
            (cap_p99 or 0) < 5,
            "ms",
        )
    )
    idle = _over(
        by_name.get(TURRET, {}).get("rss_idle_kib"), by_name.get("baseline", {}).get("rss_idle_kib")
    )
    out.append(_target("idle RSS, Turret / baseline", "<= 1.15", idle, (idle or 0) <= 1.15, "x"))
    cold = _over(_median(results["cold_start_ms"]), _median(results["baseline_cold_start_ms"]))
    out.append(_target("cold start, Turret / baseline", "<= 1.5", cold, (cold or 0) <= 1.5, "x"))
    check = results["check_config"]
    ratio = check["ratio"] if check else None
    out.append(
        _target(
            f"check-config of {check['agents'] if check else 10_000:,} agents / CSafeLoader load",
            "<= 1.5",
            ratio,
            (ratio or 0) <= 1.5,
            "x",
        )
    )
    policy = results["policy"]
    if policy:
        decide = [p["decide_agents_us"] for p in policy] + [p["decide_grants_us"] for p in policy]
        flat = max(decide) / min(decide)
        what = "decision time, slowest / fastest size"
        out.append(_target(what, "<= 1.5", flat, flat <= 1.5, "x"))
    reload = results["reload"]
    if reload is not None:
        failed = None if reload["unsupported"] else reload["failed"]
        row = _target("failed requests across reloads", "0", failed, failed == 0, "", digits=0)
        out.append({**row, "note": reload["unsupported"]})
    return out


# --- rendering -----------------------------------------------------------------------------------


def _f(value: float | None, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:,.{digits}f}"


def scenario_table(results: Results) -> str:
    """The comparison as a Markdown table (also readable on a terminal)."""
    head = (
        "| scenario | rps (sat.) | p50 / p99 / p99.9 ms (sat.) | failed (sat.) "
        f"| p50 / p99 / p99.9 ms @ {results['settings']['rate']:g}/s | failed @ rate "
        f"| RSS idle MiB | RSS {results['settings']['held_connections']} conns MiB |"
    )
    lines = [head, "|" + "---|" * 8]
    for row in results["scenarios"]:
        if row["unavailable"]:
            lines.append(f"| {row['label']} | not yet available: {row['unavailable']} |" + " |" * 6)
            continue
        sat, rate = row.get("saturation") or {}, row.get("rate") or {}
        idle, held = row.get("rss_idle_kib"), row.get("rss_held_kib")
        lines.append(
            f"| {row['label']} | {_f(sat.get('rps'), 0)} "
            f"| {_f(sat.get('p50_ms'))} / {_f(sat.get('p99_ms'))} / {_f(sat.get('p999_ms'))} "
            f"| {sat.get('failed', '-')} "
            f"| {_f(rate.get('p50_ms'))} / {_f(rate.get('p99_ms'))} / {_f(rate.get('p999_ms'))} "
            f"| {rate.get('failed', '-')} "
            f"| {_f(idle / 1024 if idle else None, 1)} | {_f(held / 1024 if held else None, 1)} |"
        )
    return "\n".join(lines)


def targets_table(results: Results) -> str:
    """The issue's targets, measured."""
    lines = ["| target | wanted | measured | met |", "|---|---|---|---|"]
    for t in results["targets"]:
        met = {True: "yes", False: "**no**", None: "n/a"}[t["met"]]
        measured = f"{_f(t['measured'], t['digits'])} {t['unit']}".strip()
        if t.get("note"):
            measured = f"not measured: {t['note']}"
        lines.append(f"| {t['what']} | {t['target']} | {measured} | {met} |")
    return "\n".join(lines)


def extras_text(results: Results) -> str:
    """Cold start, reload and policy scale in Markdown."""
    blocks = []
    for key, who in (("cold_start_ms", "Turret"), ("baseline_cold_start_ms", "aiohttp baseline")):
        cold = results[key]
        if cold:
            runs = ", ".join(_f(c, 0) for c in cold)
            blocks.append(
                f"**Cold start, {who}** (socket-activated, first connection to first response): "
                f"median {_f(statistics.median(cold), 0)} ms of {len(cold)} runs ({runs} ms)."
            )
    check = results["check_config"]
    if check:
        blocks.append(
            f"**check-config** of {check['agents']:,} agents (whole command, median of "
            f"{len(check['turret_s'])}): `turret check-config` {_f(check['turret_median_s'])} s, "
            f"a bare `yaml.load(..., Loader=yaml.CSafeLoader)` of the same file (also a whole "
            f"`python -c`) {_f(check['bare_median_s'])} s: {_f(check['ratio'])} x."
        )
    reload = results["reload"]
    if reload and reload["unsupported"]:
        blocks.append(
            f"**Reload under load**: not supported: {reload['unsupported']} "
            f"({reload['failed']} of {reload['sent']} requests failed)."
        )
    elif reload:
        blocks.append(
            f"**Reload under load**: {reload['sighups']} SIGHUPs, {reload['reloads_audited']} "
            f"reloads audited, {reload['failed']} of {reload['sent']} requests failed "
            f"{reload['failures'] or ''}".rstrip()
            + "."
        )
    if results["policy"]:
        rows = [
            "**Policy scale**: one decision is token lookup + path canonicalisation + "
            "`decide_proxy`; config load is `load_config` (YAML and validation); decisions "
            "timed in 5 interleaved rounds of every size, the fastest batch of each.",
            "",
            "| N | load config, N agents | decide, N agents | load config, 1 agent with N grants "
            "| decide, N grants (last one matches) |",
            "|---|---|---|---|---|",
        ]
        rows += [
            f"| {p['size']:,} | {_f(p['load_agents_ms'], 0)} ms "
            f"| {_f(p['decide_agents_us'], 1)} µs | {_f(p['load_grants_ms'], 0)} ms "
            f"| {_f(p['decide_grants_us'], 1)} µs |"
            for p in results["policy"]
        ]
        blocks.append("\n".join(rows))
    return "\n\n".join(blocks)


def stages_text(results: Results) -> str:
    """The in-process stage table (`python -m bench.stages`), if it was run."""
    figures = results.get("stages")
    if not figures:
        return ""
    return "\n\n".join(
        [
            "**Stages** (`python -m bench.stages`: µs per request, median, in-process, one "
            'request at a time, the mix of the scenarios; "upstream send" is the aiohttp '
            "client exchange with nginx on loopback):",
            stages.table(figures["columns"]),
            stages.depth_line(figures["decide_by_token_depth_us"]),
        ]
    )


def markdown(results: Results) -> str:
    """The generated part of RESULTS.md."""
    m, v, s = results["machine"], results["versions"], results["settings"]
    ratios = "; ".join(
        f"{k} = {_f(r['median'])} ({_f(r['min'])}-{_f(r['max'])})"
        for k, r in results["ratios"].items()
        if r["median"] is not None
    )
    setup = [
        f"- machine: {m['cpu']}, {m['memory']} RAM; {m['os']}; load average before "
        f"{m['load_before']}, after {m['load_after']}",
        "- versions: " + ", ".join(f"{k} {val}" for k, val in v.items()),
        f"- load: {s['rounds']} interleaved rounds (A B C, C B A, ...), each with saturation "
        f"wrk -t1 -c{s['connections']} for {s['saturation_s']} s (after {s['warmup_s']} s "
        f"warm-up) and a fixed rate of {s['rate']:g} requests/s for {s['rate_s']:g} s (open "
        f"loop, latencies pooled); the capability path also at {s['capacity_rate']:g} "
        f"requests/s; {s['held_connections']} held keep-alive connections",
    ]
    leaks = results["canary_leaks"]
    return "\n\n".join(
        [
            f"Measured {results['when']} by `make bench` ({results['mode']} run, "
            f"{results['elapsed_s']:.0f} s).",
            "\n".join(setup),
            scenario_table(results),
            f"Ratios of throughput at saturation, each from one round, median (lowest-highest) "
            f"over {s['rounds']} interleaved rounds: {ratios}. {_lag_line(results)}",
            targets_table(results),
            extras_text(results),
            stages_text(results),
            f"Canary credentials found in responses, logs or audit records: {leaks or 'none'}.",
        ]
    )


def _lag_line(results: Results) -> str:
    lags = [
        f"{row['label']} {_f(row['rate']['lag_p99_ms'])} ms"
        for row in results["scenarios"]
        if row.get("rate")
    ]
    return "How late the open-loop generator sent (p99): " + ", ".join(lags) + "." if lags else ""


def replace_block(path: Path, text: str, begin: str = BEGIN, end: str = END) -> bool:
    """Replace what lies between `begin` and `end` in `path`; False if the markers are absent."""
    if not path.exists():
        return False
    old = path.read_text()
    pattern = re.compile(re.escape(begin) + ".*?" + re.escape(end), re.DOTALL)
    if not pattern.search(old):
        return False
    path.write_text(pattern.sub(lambda _: f"{begin}\n{text}\n{end}", old))
    return True


def summary_line(results: Results) -> str:
    """The key figures in a few lines, for the README."""
    by_name = {row["name"]: row for row in results["scenarios"]}
    parts = []
    for name in ("direct", "nginx", "baseline", TURRET, "turret-capability"):
        sat = by_name.get(name, {}).get("saturation")
        if sat:
            parts.append(f"{by_name[name]['label']} {sat['rps']:,.0f}")
    lines = [f"- requests/s at saturation (wrk -t1 -c64): {', '.join(parts)}"]
    for t in results["targets"]:
        met = {True: "met", False: "missed", None: "not measured"}[t["met"]]
        measured = f"{_f(t['measured'], t['digits'])} {t['unit']}".strip()
        if t.get("note"):
            lines.append(f"- {t['what']}: not measured ({t['note']})")
            continue
        lines.append(f"- {t['what']}: {measured} (target {t['target']}, {met})")
    lines.append(
        f"- measured {results['when']} on {results['machine']['cpu']}; "
        "see bench/RESULTS.md for the method and caveats"
    )
    return "\n".join(lines)
