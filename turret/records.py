"""What audit records hold: events, priorities, field values, and the records of one request.

Pure: a record is written through a `Recorder` (the `Auditor` and its sink do the I/O). Values
that came from an agent are capped in length and have control characters escaped, so they cannot
forge fields or lines; strings a record takes from a request are scrubbed of secrets first.
"""

from __future__ import annotations

import enum
import logging
import time
from dataclasses import dataclass, field
from typing import Protocol

from turret.errors import AuditUnavailable, RequestError
from turret.policy import Decision, Result
from turret.ratelimit import Flooded
from turret.scrub import Scrubber

log = logging.getLogger("turret")
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
    ADMIN_ACTION = "4f1b6c2e8a0d4c1b9e7f3a5d2c8b6e08"
    ADMIN_REFUSED = "4f1b6c2e8a0d4c1b9e7f3a5d2c8b6e09"
    TOKEN_MINTED = "4f1b6c2e8a0d4c1b9e7f3a5d2c8b6e31"  # noqa: S105 - an event id, not a secret
    TOKEN_REVOKED = "4f1b6c2e8a0d4c1b9e7f3a5d2c8b6e32"  # noqa: S105 - an event id, not a secret
    TOKEN_EXPIRED = "4f1b6c2e8a0d4c1b9e7f3a5d2c8b6e33"  # noqa: S105 - an event id, not a secret
    AGENT_TOKEN_EXPIRING = "4f1b6c2e8a0d4c1b9e7f3a5d2c8b6e41"  # noqa: S105 - an event id
    AGENT_TOKEN_EXPIRED = "4f1b6c2e8a0d4c1b9e7f3a5d2c8b6e42"  # noqa: S105 - an event id
    # Key age (turret.credwatch): the warnings, and a rotation seen at start or reload.
    CREDENTIAL_ROTATE_SOON = "4f1b6c2e8a0d4c1b9e7f3a5d2c8b6e50"
    CREDENTIAL_OVERDUE = "4f1b6c2e8a0d4c1b9e7f3a5d2c8b6e51"
    CREDENTIAL_ROTATED = "4f1b6c2e8a0d4c1b9e7f3a5d2c8b6e52"
    # the dead-man switch (turret.deadman)
    HEARTBEAT_FAILED = "4f1b6c2e8a0d4c1b9e7f3a5d2c8b6e60"
    HEARTBEAT_RECOVERED = "4f1b6c2e8a0d4c1b9e7f3a5d2c8b6e61"
    # the tamper-evident audit chain (turret.auditchain): its first record, and each restart's
    CHAIN_STARTED = "4f1b6c2e8a0d4c1b9e7f3a5d2c8b6e70"
    CHAIN_RESUMED = "4f1b6c2e8a0d4c1b9e7f3a5d2c8b6e71"
    # human approval (turret.pipeline.approvals, turret.web.admin_approvals)
    APPROVAL_REQUESTED = "4f1b6c2e8a0d4c1b9e7f3a5d2c8b6eb0"
    APPROVAL_GRANTED = "4f1b6c2e8a0d4c1b9e7f3a5d2c8b6eb1"
    APPROVAL_DENIED = "4f1b6c2e8a0d4c1b9e7f3a5d2c8b6eb2"
    APPROVAL_EXPIRED = "4f1b6c2e8a0d4c1b9e7f3a5d2c8b6eb3"
    APPROVAL_EXECUTED = "4f1b6c2e8a0d4c1b9e7f3a5d2c8b6eb4"
    APPROVAL_NOTIFY_FAILED = "4f1b6c2e8a0d4c1b9e7f3a5d2c8b6eb5"
    APPROVAL_REFUSED = "4f1b6c2e8a0d4c1b9e7f3a5d2c8b6eb6"
    # Credential providers that mint (turret.providers.minting)
    CREDENTIAL_MINTED = "4f1b6c2e8a0d4c1b9e7f3a5d2c8b6e80"
    CREDENTIAL_MINT_FAILED = "4f1b6c2e8a0d4c1b9e7f3a5d2c8b6e81"
    CREDENTIAL_REVOKED = "4f1b6c2e8a0d4c1b9e7f3a5d2c8b6e82"
    CREDENTIAL_REVOKE_FAILED = "4f1b6c2e8a0d4c1b9e7f3a5d2c8b6e83"

    @property
    def label(self) -> str:
        return self.name.lower()


# journald priorities
INFO, NOTICE, WARNING, ERR = 6, 5, 4, 3
CRIT = 2  # the dead-man switch fired; a credential Turret cannot obtain

Fields = dict[str, str | int | float | None]


def clean(value: object) -> str:
    """A field value safe to record: control characters escaped, length capped."""
    text = value if type(value) is str else str(value)
    if len(text) <= MAX_FIELD_CHARS and text.isprintable():
        return text  # the common case, in one test
    if not text.isprintable():
        text = "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text)
    if len(text) > MAX_FIELD_CHARS:
        text = text[:MAX_FIELD_CHARS] + "...[truncated]"
    return text



class Recorder(Protocol):
    """Writes one record, or raises `AuditUnavailable` (the `Auditor`)."""

    def record(self, event: Event, message: str, fields: Fields, priority: int = INFO) -> None:
        """Write the record; raise `AuditUnavailable` if it is lost."""


@dataclass
class RequestAudit:
    """The audit records of one request; common fields are filled in as they become known."""

    auditor: Recorder
    fields: Fields
    scrub: Scrubber
    started: float = field(default_factory=time.monotonic)

    def _record(self, event: Event, message: str, fields: Fields, priority: int = INFO) -> None:
        scrub = self.scrub
        if scrub.needed():  # else no recorded string can hold a secret: none is rewritten
            fields = {k: scrub(v) if isinstance(v, str) else v for k, v in fields.items()}
            message = scrub(message)
        self.auditor.record(event, message, fields, priority=priority)

    def event(self, event: Event, message: str, extra: Fields, priority: int = INFO) -> None:
        """Another record of this request (a token minted or revoked), with its common fields."""
        self._record(event, message, {**self.fields, **extra}, priority)

    def refused(self, exc: RequestError) -> None:
        """Record the refusal `exc`; of a flood, only the refusals the flood gate says to."""
        if not isinstance(exc, Flooded) or exc.recorded:
            self.decision(Decision.deny(exc.reason), exc.status)

    def decision(self, decision: Decision, status: int | None = None) -> None:
        label = "allow" if decision.allowed else "deny"
        if decision.result is Result.APPROVAL:
            label = "approval"  # held for a person: neither done nor refused yet
        self._record(
            Event.DECISION,
            f"{self.fields.get('TURRET_AGENT') or '-'}: {label} - {decision.reason}",
            {
                **self.fields,
                "TURRET_DECISION": label,
                "TURRET_REASON": decision.reason,
                "TURRET_RULE": decision.rule,
                "TURRET_REPORT": "would-deny" if decision.would_deny else None,
                "TURRET_STATUS": status,
            },
            priority=INFO if decision.allowed else NOTICE,
        )

    def outcome(self, status: int, reason: str, extra: Fields) -> None:
        ms = round((time.monotonic() - self.started) * 1000, 3)
        self._record(
            Event.OUTCOME,
            f"{self.fields.get('TURRET_AGENT')}: {status} {reason}",
            {
                **self.fields,
                **extra,
                "TURRET_STATUS": status,
                "TURRET_REASON": reason,
                "TURRET_DURATION_MS": ms,
            },
        )

    def outcome_of_action(self, status: int, reason: str, extra: Fields) -> None:
        """The outcome of a request the upstream has acted on. If this record is lost the agent
        still gets the true answer (a 503 now would invite a retry of what was done); the
        decision record was written before anything was sent, and the loss is logged."""
        try:
            self.outcome(status, reason, extra)
        except AuditUnavailable:
            log.exception("outcome record of request %s lost", self.fields["TURRET_REQUEST_ID"])


