"""`python -m bench.profile FILE...`: the top entries of py-spy profiles (raw, collapsed stacks).

`python -m bench --profile` records each Python server at saturation with py-spy into
`--out`/profile-NAME.txt; this prints where the time went, by function: "self" (the sampled
frame itself) and "total" (the function anywhere on the stack), as shares of all samples.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from pathlib import Path

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^():]+?)(?::\d+)?\)$")


def _name(frame: str) -> str:
    """`func (path/to/module.py:12)` as `module.py:func`."""
    m = _FRAME.match(frame.strip())
    if not m:
        return frame.strip()
    return f"{Path(m['file']).name}:{m['func']}"


def summarise(text: str) -> tuple[int, Counter[str], Counter[str]]:
    """Samples in all, and samples by function: as the sampled frame, and anywhere on a stack."""
    total, own, anywhere = 0, Counter[str](), Counter[str]()
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [_name(f) for f in stack.split(";")]
        total += n
        own[frames[-1]] += n
        for name in set(frames):
            anywhere[name] += n
    return total, own, anywhere


def top(text: str, count: int = 15) -> str:
    """A Markdown table of the top functions by self and by total share."""
    total, own, anywhere = summarise(text)
    if not total:
        return "no samples"
    rows = ["| self % | function | | total % | function |", "|---|---|---|---|---|"]
    by_own, by_all = own.most_common(count), anywhere.most_common(count + 8)
    by_all = [(k, v) for k, v in by_all if not k.startswith(("<module>", "run", "_run"))][:count]
    for (a, na), (b, nb) in zip(by_own, by_all, strict=False):
        rows.append(f"| {100 * na / total:.1f} | `{a}` | | {100 * nb / total:.1f} | `{b}` |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    """Print the tables of the given profiles."""
    p = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__)
    p.add_argument("files", nargs="+", type=Path)
    p.add_argument("--top", type=int, default=15)
    args = p.parse_args(argv)
    for path in args.files:
        print(f"### {path.name}\n\n{top(path.read_text(), args.top)}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
