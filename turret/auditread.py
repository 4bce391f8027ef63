"""Reading audit records back: from journald (`journalctl -o json`, Turret's unit only) or from
a JSON-lines audit file (`turret serve --audit-file`, or a `journalctl -o json` export), once or
following new records; and the chain key from a credential file.

Only records journald attributes to Turret's unit (`_SYSTEMD_UNIT`, a field journald sets from
the sender's cgroup, so another process cannot forge it) and `SYSLOG_IDENTIFIER=turret` are read.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TextIO

JOURNALCTL = "journalctl"
UNIT = "turret.service"
MAX_KEY_BYTES = 64 * 1024
Wait = Callable[[], bool]  # between polls of a followed file; False stops following


def poll(interval: float = 0.5) -> Wait:
    """The default `Wait` of `follow_file`: sleep `interval`, and go on."""

    def wait() -> bool:
        time.sleep(interval)
        return True

    return wait


def parse_line(line: str, number: int) -> dict[str, object]:
    """One JSON-lines record; a line that is not a JSON object reads as an unchained record
    saying so (shown in the table, and never verifying as part of the chain)."""
    try:
        record = json.loads(line)
    except ValueError:
        record = None
    if isinstance(record, dict):
        return record
    return {"TURRET_EVENT": "unparsable", "MESSAGE": f"line {number} is not a JSON object"}


def read_file(path: str, last: int | None = None) -> Iterator[dict[str, object]]:
    """The records of a JSON-lines file (blank lines skipped), or only the `last` ones."""
    with Path(path).open(encoding="utf-8", errors="replace") as f:
        lines = ((n, line) for n, line in enumerate(f, 1) if line.strip())
        kept = deque(lines, maxlen=last) if last is not None else lines
        for number, line in kept:
            yield parse_line(line, number)


def follow_file(
    path: str, wait: Wait
) -> tuple[list[dict[str, object]], Iterator[dict[str, object]]]:
    """The records in the file now, and an iterator of each record appended to it later, until
    `wait` says stop. A line is read once it is complete (ends with a newline)."""
    f = Path(path).open(encoding="utf-8", errors="replace")  # noqa: SIM115 - closed by _appended
    lines = f.read().splitlines(keepends=True)
    partial = lines.pop() if lines and not lines[-1].endswith("\n") else ""
    existing = [parse_line(line, n) for n, line in enumerate(lines, 1) if line.strip()]
    return existing, _appended(f, len(lines), partial, wait)


def _appended(
    f: TextIO, number: int, partial: str, wait: Wait
) -> Iterator[dict[str, object]]:
    with f:
        while True:
            chunk = f.readline()
            if not chunk:
                if not wait():
                    return
                continue
            partial += chunk
            if partial.endswith("\n"):
                number += 1
                if partial.strip():
                    yield parse_line(partial, number)
                partial = ""


def journal_argv(
    matches: Mapping[str, str], since: float | None, last: int | None, follow: bool,
    unit: str = UNIT,
) -> list[str]:
    """The `journalctl` command line reading Turret's audit records."""
    argv = [JOURNALCTL, "--output=json", "--no-pager", "--quiet", f"_SYSTEMD_UNIT={unit}"]
    argv += ["SYSLOG_IDENTIFIER=turret", *(f"{k}={v}" for k, v in sorted(matches.items()))]
    if since is not None:
        argv.append(f"--since=@{since:.6f}")
    if last is not None:
        argv.append(f"--lines={last}")
    if follow:
        argv.append("--follow")
    return argv


def read_journal(argv: list[str]) -> Iterator[dict[str, object]]:
    """The records `journalctl` prints; FileNotFoundError when there is no journalctl,
    OSError when it fails."""
    with subprocess.Popen(  # noqa: S603 - argv is built by journal_argv, no shell
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, errors="replace"
    ) as proc:
        assert proc.stdout is not None  # noqa: S101 - stdout=PIPE
        try:
            for number, line in enumerate(proc.stdout, 1):
                if line.strip():
                    yield parse_line(line, number)
        finally:
            if proc.poll() is None:
                proc.terminate()
        stderr = proc.stderr.read() if proc.stderr is not None else ""
        if proc.wait() not in (0, -15):
            raise OSError(f"journalctl failed: {stderr.strip()[:300]}")


def read_key(path: str) -> bytes:
    """The chain key from a credential file, read as Turret reads credentials (one trailing
    newline dropped); ValueError naming what is wrong, never the content."""
    try:
        data = Path(path).read_bytes()[: MAX_KEY_BYTES + 1]
    except OSError as exc:
        raise ValueError(f"{path}: cannot be read ({exc.strerror})") from None
    if len(data) > MAX_KEY_BYTES:
        raise ValueError(f"{path}: is larger than {MAX_KEY_BYTES // 1024} KiB")
    if data.endswith(b"\n"):
        data = data[:-1]
    if not data:
        raise ValueError(f"{path}: is empty")
    return data
