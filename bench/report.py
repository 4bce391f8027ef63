"""Results: from measurements to one JSON-ready dict, the terminal table and bench/RESULTS.md."""

from __future__ import annotations

import math
import os
import platform
import re
import subprocess
from pathlib import Path
from typing import Any

import aiohttp

import turret
from bench.extras import PolicyRow, ReloadResult
from bench.loadgen import percentile
from bench.scenarios import Outcome

Results = dict[str, Any]
BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"
SUMMARY_BEGIN, SUMMARY_END = "<!-- bench:summary:begin -->", "<!-- bench:summary:end -->"
TURRET = "turret-proxy"


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


def scenario_figures(outcome: Outcome) -> dict[str, Any]:
    """The figures of one scenario, as plain values."""
    s = outcome.scenario
    row: dict[str, Any] = {"name": s.name, "label": s.label, "unavailable": outcome.unavailable}
    if outcome.saturation is not None:
        sat = outcome.saturation
        row["saturation"] = {
            "rps": sat.rps,
            "requests": sat.requests,
            "p50_ms": sat.p50_ms,
            "p99_ms": sat.p99_ms,
            "p999_ms": sat.p999_ms,
            "failed": sat.failed,
        }
    if outcome.rate is not None:
        lat = outcome.rate.latencies_ms
        row["rate"] = {
            "sent": len(lat) + outcome.rate.failed,
            "failed": outcome.rate.failed,
            "failures": outcome.rate.failures,
            "p50_ms": percentile(lat, 50),
            "p99_ms": percentile(lat, 99),
            "p999_ms": percentile(lat, 99.9),
            "lag_p99_ms": percentile(outcome.rate.lags_ms, 99),
            "leaks": outcome.rate.leaks,
        }
    for key in ("rss_idle_kib", "rss_held_kib", "held_ok"):
        row[key] = getattr(outcome, key)
    return row


def summarise(
    results: Results,
    cold_ms: list[float] | None,
    reload: ReloadResult | None,
    policy: list[PolicyRow] | None,
) -> None:
    """Add the extra measurements, ratios and target verdicts to `results`."""
    results["cold_start_ms"] = cold_ms
    results["reload"] = reload.__dict__ if reload is not None else None
    results["policy"] = [row.__dict__ for row in policy] if policy is not None else None
    by_name = {row["name"]: row for row in results["scenarios"]}
    results["ratios"] = _ratios(by_name)
    results["targets"] = _targets(by_name, results)


def _rps(by_name: dict[str, Any], name: str) -> float | None:
    sat = by_name.get(name, {}).get("saturation")
    return sat["rps"] if sat else None


def _ratios(by_name: dict[str, Any]) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    turret_rps = _rps(by_name, TURRET)
    for other in ("direct", "nginx", "baseline"):
        base = _rps(by_name, other)
        out[f"turret/{other}"] = turret_rps / base if turret_rps and base else None
    return out


def _added(by_name: dict[str, Any], key: str) -> float | None:
    t, d = by_name.get(TURRET, {}).get("rate"), by_name.get("direct", {}).get("rate")
    return t[key] - d[key] if t and d else None


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


def _targets(by_name: dict[str, Any], results: Results) -> list[dict[str, Any]]:
    ratios = results["ratios"]
    rate = f"at {results['settings']['rate']:g} requests/s over direct"
    cold = results["cold_start_ms"]
    cold_median = sorted(cold)[len(cold) // 2] if cold else None
    idle_kib = by_name.get(TURRET, {}).get("rss_idle_kib")
    idle = idle_kib / 1024 if idle_kib else None
    vs_base, vs_nginx = ratios["turret/baseline"], ratios["turret/nginx"]
    p50, p99 = _added(by_name, "p50_ms"), _added(by_name, "p99_ms")
    out = [
        _target(
            "throughput, Turret / aiohttp baseline", ">= 0.9", vs_base, (vs_base or 0) >= 0.9, "x"
        ),
        _target("throughput, Turret / nginx", ">= 0.2", vs_nginx, (vs_nginx or 0) >= 0.2, "x"),
        _target(f"added p50 {rate}", "<= 1 ms", p50, (p50 or 0) <= 1, "ms"),
        _target(f"added p99 {rate}", "<= 5 ms", p99, (p99 or 0) <= 5, "ms"),
        _target(
            "cold start, median",
            "<= 300 ms",
            cold_median,
            (cold_median or 0) <= 300,
            "ms",
            digits=0,
        ),
        _target("idle RSS", "<= 40 MiB", idle, (idle or 0) <= 40, "MiB", digits=1),
    ]
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
    cold = results["cold_start_ms"]
    if cold:
        runs = ", ".join(_f(c, 0) for c in cold)
        blocks.append(
            "**Cold start** (socket-activated, first connection to first response): median "
            f"{_f(sorted(cold)[len(cold) // 2], 0)} ms of {len(cold)} runs ({runs} ms)."
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
            "`decide_proxy`; config load is `load_config` (YAML and validation).",
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


def markdown(results: Results) -> str:
    """The generated part of RESULTS.md."""
    m, v, s = results["machine"], results["versions"], results["settings"]
    ratios = ", ".join(f"{k} = {_f(r)}" for k, r in results["ratios"].items())
    setup = [
        f"- machine: {m['cpu']}, {m['memory']} RAM; {m['os']}; load average before "
        f"{m['load_before']}, after {m['load_after']}",
        "- versions: " + ", ".join(f"{k} {val}" for k, val in v.items()),
        f"- load: saturation wrk -t1 -c{s['connections']} for {s['saturation_s']} s after "
        f"{s['warmup_s']} s warm-up; fixed rate {s['rate']:g} requests/s for {s['rate_s']:g} s "
        f"(open loop); {s['held_connections']} held keep-alive connections",
    ]
    leaks = results["canary_leaks"]
    return "\n\n".join(
        [
            f"Measured {results['when']} by `make bench` ({results['mode']} run, "
            f"{results['elapsed_s']:.0f} s).",
            "\n".join(setup),
            scenario_table(results),
            f"Ratios of throughput at saturation: {ratios}. {_lag_line(results)}",
            targets_table(results),
            extras_text(results),
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
