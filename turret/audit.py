"""The audit trail: one structured record per event, to journald or as JSON lines.

Records are written synchronously, before the action they describe, and a write that fails raises
`AuditUnavailable` so the action does not happen (fail closed). Values that came from an agent are
capped in length and have control characters escaped, so they cannot forge fields or lines.
"""

from __future__ import annotations

import enum
import json
import os
import time
from pathlib import Path
from typing import Protocol

from turret.errors import AuditUnavailable

JOURNAL_SOCKET = "/run/systemd/journal/socket"
MAX_FIELD_CHARS = 512


class Event(enum.Enum):
    """Event types; the value is the journald MESSAGE_ID (`journalctl MESSAGE_ID=...`)."""

    STARTED = "4f1b6c2e8a0d4c1b9e7f3a5d2c8b6e01"
    STOPPED = "4f1b6c2e8a0d4c1b9e7f3a5d2c8b6e02"
    CONFIG_ERROR = "4f1b6c2e8a0d4c1b9e7f3a5d2c8b6e03"
    DECISION = "4f1b6c2e8a0d4c1b9e7f3a5d2c8b6e04"
    OUTCOME = "4f1b6c2e8a0d4c1b9e7f3a5d2c8b6e05"
    RELOADED = "4f1b6c2e8a0d4c1b9e7f3a5d2c8b6e06"
    RELOAD_FAILED = "4f1b6c2e8a0d4c1b9e7f3a5d2c8b6e07"

    @property
    def label(self) -> str:
        return self.name.lower()


# journald priorities
INFO, NOTICE, WARNING, ERR = 6, 5, 4, 3

Fields = dict[str, str | int | float | None]


class Sink(Protocol):
    def write(self, message: str, fields: dict[str, str]) -> None:
        """Write one record or raise OSError."""


class JournalSink:
    """journald through systemd-python; `_SYSTEMD_UNIT` and friends are added by journald."""

    def __init__(self) -> None:
        from systemd import journal  # type: ignore[attr-defined]  # noqa: PLC0415 - only where a journal exists

        self._send = journal.send

    def write(self, message: str, fields: dict[str, str]) -> None:
        self._send(message, SYSLOG_IDENTIFIER="turret", **fields)


class LineSink:
    """One JSON object per line on a file descriptor, each written with a single write()."""

    def __init__(self, fd: int) -> None:
        self._fd = fd

    @classmethod
    def open(cls, path: str) -> LineSink:
        return cls(os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600))

    def write(self, message: str, fields: dict[str, str]) -> None:
        record = {"ts": f"{time.time():.6f}", "MESSAGE": message, **fields}
        line = (json.dumps(record, ensure_ascii=True, separators=(",", ":")) + "\n").encode()
        if os.write(self._fd, line) != len(line):
            raise OSError("short write to audit file")


def default_sink(audit_file: str | None) -> Sink:
    """`--audit-file` if given, else journald where its socket exists, else stderr."""
    if audit_file:
        return LineSink.open(audit_file)
    if Path(JOURNAL_SOCKET).exists():
        return JournalSink()
    return LineSink(2)


def clean(value: object) -> str:
    """A field value safe to record: control characters escaped, length capped."""
    text = str(value)
    if not text.isprintable():
        text = "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text)
    if len(text) > MAX_FIELD_CHARS:
        text = text[:MAX_FIELD_CHARS] + "...[truncated]"
    return text


class Auditor:
    """Writes audit records; every method raises `AuditUnavailable` if the record is lost."""

    def __init__(self, sink: Sink) -> None:
        self._sink = sink

    def record(self, event: Event, message: str, fields: Fields, priority: int = INFO) -> None:
        out = {"MESSAGE_ID": event.value, "PRIORITY": str(priority), "TURRET_EVENT": event.label}
        for key, value in fields.items():
            if value is not None:
                out[key] = clean(value)
        try:
            self._sink.write(clean(message), out)
        except (OSError, ValueError) as exc:
            raise AuditUnavailable(f"audit record could not be written: {exc}") from exc
