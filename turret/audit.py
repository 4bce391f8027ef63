"""The audit trail: one structured record per event, to journald or as JSON lines.

Records are written synchronously, before the action they describe, and a write that fails raises
`AuditUnavailable` so the action does not happen (fail closed). Values that came from an agent are
capped in length and have control characters escaped, so they cannot forge fields or lines.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Protocol

from turret.auditchain import ChainWriter
from turret.errors import AuditUnavailable
from turret.records import INFO, Event, Fields, clean

JOURNAL_SOCKET = "/run/systemd/journal/socket"
# One encoder for every record: `json.dumps` with options builds a new one per call.
_ENCODE = json.JSONEncoder(ensure_ascii=True, separators=(",", ":")).encode




class Sink(Protocol):
    def write(self, message: str, fields: dict[str, str]) -> None:
        """Write one record or raise OSError."""


class JournalSink:
    """journald through systemd-python; `_SYSTEMD_UNIT` and friends are added by journald."""

    def __init__(self) -> None:
        from systemd import journal  # type: ignore[attr-defined]  # noqa: PLC0415 - only where a journal exists

        self._sendv = journal.sendv

    def write(self, message: str, fields: dict[str, str]) -> None:
        # `journal.send` would also walk the Python stack on every record for CODE_FILE, _LINE
        # and _FUNC (always this method): about half of what a record cost.
        items = [f"{key}={value}" for key, value in fields.items()]
        self._sendv(f"MESSAGE={message}", "SYSLOG_IDENTIFIER=turret", *items)


class LineSink:
    """One JSON object per line on a file descriptor, each written with a single write()."""

    def __init__(self, fd: int) -> None:
        self._fd = fd

    @classmethod
    def open(cls, path: str) -> LineSink:
        return cls(os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600))

    def write(self, message: str, fields: dict[str, str]) -> None:
        record = {"ts": f"{time.time():.6f}", "MESSAGE": message, **fields}
        line = (_ENCODE(record) + "\n").encode()
        if os.write(self._fd, line) != len(line):
            raise OSError("short write to audit file")


def default_sink(audit_file: str | None) -> Sink:
    """`--audit-file` if given, else journald where its socket exists, else stderr."""
    if audit_file:
        return LineSink.open(audit_file)
    if Path(JOURNAL_SOCKET).exists():
        return JournalSink()
    return LineSink(2)


class Auditor:
    """Writes audit records; every method raises `AuditUnavailable` if the record is lost."""

    def __init__(self, sink: Sink) -> None:
        self._sink = sink
        self.chain: ChainWriter | None = None  # numbers and links records (`turret.auditseal`)

    @property
    def sink_kind(self) -> str:
        """Where records go, for `turret status`: journald, a file (or stderr), or another sink."""
        return {JournalSink: "journald", LineSink: "file"}.get(type(self._sink), "other")

    def record(self, event: Event, message: str, fields: Fields, priority: int = INFO) -> None:
        out = {"MESSAGE_ID": event.value, "PRIORITY": str(priority), "TURRET_EVENT": event.label}
        for key, value in fields.items():
            if value is not None:
                out[key] = clean(value)
        try:
            if self.chain is None:
                self._sink.write(clean(message), out)
            else:
                self.chain.write(clean(message), out, self._sink.write)
        except (OSError, ValueError) as exc:
            raise AuditUnavailable(f"audit record could not be written: {exc}") from exc
