"""The picture: latency by percentile at the fixed rate, and throughput at saturation."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from bench.loadgen import percentile

QUANTILES = [50 + 50 * (1 - 10 ** (-k / 20)) for k in range(0, 81)]  # 50 ... 99.99, log-spaced
TICKS = (50, 90, 99, 99.9, 99.99)


def _x(q: float) -> float:
    """Percentiles on an axis that spreads the tail: 50 -> 0.3, 90 -> 1, 99 -> 2, 99.9 -> 3."""
    return -math.log10(1 - q / 100)


def write_plot(
    path: Path,
    latencies_ms: Mapping[str, Sequence[float]],
    rps: Mapping[str, float],
    results: Mapping[str, Any],
) -> None:
    """Write a PNG with both panels to `path`."""
    import matplotlib  # noqa: PLC0415 - only `make bench` installs it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415
    import matplotlib.ticker  # noqa: PLC0415

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.8), gridspec_kw={"width_ratios": [3, 2]})
    for label, values in latencies_ms.items():
        n = len(values)
        usable = [q for q in QUANTILES if n * (1 - q / 100) >= 1]  # at least one sample beyond
        left.plot([_x(q) for q in usable], [percentile(values, q) for q in usable], label=label)
    left.set_xticks([_x(q) for q in TICKS], [f"p{q:g}" for q in TICKS])
    left.set_yscale("log")
    left.yaxis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
    left.yaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
    left.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    left.set_ylabel("latency, ms (log scale)")
    left.set_xlabel("percentile")
    left.set_title(f"Latency at {results['settings']['rate']:g} requests/s (open loop)")
    left.grid(True, which="both", alpha=0.3)
    left.legend()

    labels = list(rps)
    bars = right.barh(labels, [rps[k] for k in labels], color="tab:blue")
    right.bar_label(bars, [f"{rps[k]:,.0f}" for k in labels], padding=3)
    right.invert_yaxis()
    right.set_xscale("log")
    right.xaxis.set_major_formatter(matplotlib.ticker.StrMethodFormatter("{x:,.0f}"))
    right.set_xlabel("requests/s (log scale)")
    right.set_title(f"Throughput at saturation (wrk -t1 -c{results['settings']['connections']})")
    right.set_xlim(min(rps.values(), default=1) / 3, max(rps.values(), default=1) * 4)

    fig.suptitle(
        f"Turret benchmark, {results['machine']['cpu']}, loopback; {results['when']}",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
