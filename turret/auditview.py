"""What `turret audit` shows of audit records: the filters, `--since`, and a table row.

Pure: records come from `turret.auditread` (journald or a JSON-lines file) as dicts of fields.
A record's fields may hold anything an agent sent (scrubbed and cleaned by Turret, but a file
or journal may also have been edited): every cell is escaped so no control character, ANSI
escape or bidirectional override reaches the operator's terminal.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

Record = Mapping[str, object]
SINCE = re.compile(r"([0-9]{1,9})([smhd])")
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
COLUMNS = ("TIME", "AGENT", "EVENT", "DECISION", "SERVICE", "TARGET", "STATUS", "REASON")
MAX_CELL = 80


@dataclass(frozen=True)
class Query:
    """The records asked for: each set field must match exactly; `since` is a Unix time."""

    agent: str | None = None
    service: str | None = None
    capability: str | None = None
    decision: str | None = None
    event: str | None = None
    since: float | None = None

    def fields(self) -> dict[str, str]:
        """The record fields the query matches, as journald matches (`FIELD=VALUE`)."""
        pairs = {
            "TURRET_AGENT": self.agent,
            "TURRET_SERVICE": self.service,
            "TURRET_CAPABILITY": self.capability,
            "TURRET_DECISION": self.decision,
            "TURRET_EVENT": self.event,
        }
        return {k: v for k, v in pairs.items() if v is not None}


def parse_since(text: str, now: float) -> float:
    """`--since`: an age (`90s`, `15m`, `1h`, `2d`) or a local date and time (ISO 8601:
    `2026-12-01`, `2026-12-01T10:00`, `2026-12-01 10:00:00`); ValueError otherwise."""
    m = SINCE.fullmatch(text.strip())
    if m:
        return now - int(m[1]) * UNITS[m[2]]
    try:
        return datetime.fromisoformat(text.strip()).timestamp()
    except ValueError:
        raise ValueError(
            f"--since {safe(text)!r}: give an age (30m, 1h, 2d) or a date (2026-12-01 10:00)"
        ) from None


def record_time(record: Record) -> float | None:
    """When the record was written: journald's `__REALTIME_TIMESTAMP` or the file's `ts`."""
    try:
        realtime = record.get("__REALTIME_TIMESTAMP")
        if isinstance(realtime, str):
            return int(realtime) / 1e6
        ts = record.get("ts")
        return float(ts) if isinstance(ts, str | int | float) else None
    except ValueError:
        return None


def is_audit_record(record: Record) -> bool:
    """An audit record (Turret's log lines on stderr, in the same journal, carry no event)."""
    return "TURRET_EVENT" in record


def matches(record: Record, query: Query) -> bool:
    """Whether `record` is an audit record `query` asks for."""
    if not is_audit_record(record):
        return False
    if any(record.get(k) != v for k, v in query.fields().items()):
        return False
    if query.since is not None:
        at = record_time(record)
        return at is not None and at >= query.since
    return True


def safe(value: object, limit: int = MAX_CELL) -> str:
    """`value` as text a terminal shows as it is: every non-printable character (C0 and C1
    controls, ESC, DEL, format characters such as bidi overrides and zero-width spaces,
    line and paragraph separators) escaped, and capped at `limit` characters."""
    text = value if isinstance(value, str) else "-" if value is None else str(value)
    if not text.isprintable():
        text = "".join(c if c.isprintable() else _escape(c) for c in text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def row(record: Record) -> tuple[str, ...]:
    """One table row: time, agent, event, decision, service, method and path or capability,
    status, reason (or the message, for a record without a reason)."""
    at = record_time(record)
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(at)) if at is not None else "-"
    method, path = record.get("TURRET_METHOD"), record.get("TURRET_PATH")
    capability = record.get("TURRET_CAPABILITY")
    if capability is not None:
        target: object = capability
    elif path is not None:
        target = f"{method or '-'} {path}"
    else:
        target = None
    reason = record.get("TURRET_REASON", record.get("MESSAGE"))
    cells = (
        record.get("TURRET_AGENT"),
        record.get("TURRET_EVENT"),
        record.get("TURRET_DECISION"),
        record.get("TURRET_SERVICE"),
        target,
        record.get("TURRET_STATUS"),
        reason,
    )
    return (stamp, *(safe(c) for c in cells))


def _escape(c: str) -> str:
    n = ord(c)
    return f"\\x{n:02x}" if n < 0x100 else f"\\u{n:04x}" if n < 0x10000 else f"\\U{n:08x}"
