"""Turret's persistent state: one SQLite database in the state directory.

What must outlive a request, a reload and a restart lives here — the seal, agent revocations,
derived tokens, credential key ages, the audit chain head, approvals and a few named values —
and never a secret: tokens as SHA-256 digests, credentials as keyed fingerprints (the key in a
separate file), approvals as a call hash and a redacted summary. The tables are described in
`turret.state.schema`; how the file is opened and migrated in `turret.state.db`.

    store = StateStore.open(resolve_state_dir(args.state_dir, os.environ))
    store.controls.seal("compromised agent", by_uid(0), at=clock())
    store.tokens.use(token_id)
    store.close()

Every method takes the time it acts at (`at`): the store never reads a clock.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from turret.errors import StateError
from turret.state.approvals import Approval, Approvals
from turret.state.control import AuditChain, ChainHead, Controls, Meta, Revocation, Seal, by_uid
from turret.state.credentials import CredentialAge, Credentials, FingerprintKey, Observation, short
from turret.state.db import (
    DB_NAME,
    check_directory,
    open_database,
    resolve_state_dir,
)
from turret.state.schema import MIGRATIONS
from turret.state.tokens import DerivedToken, Tokens
from turret.tokens import NewToken

__all__ = [
    "DB_NAME",
    "Approval",
    "Approvals",
    "AuditChain",
    "ChainHead",
    "Controls",
    "CredentialAge",
    "Credentials",
    "DerivedToken",
    "FingerprintKey",
    "Meta",
    "NewToken",
    "Observation",
    "Revocation",
    "Seal",
    "StateError",
    "StateStore",
    "Tokens",
    "by_uid",
    "resolve_state_dir",
    "short",
]


class StateStore:
    """The open state store: one table group per attribute."""

    def __init__(self, directory: Path, migrations: Sequence[str] = MIGRATIONS) -> None:
        """Open the store in `directory`; prefer `StateStore.open`, which checks it first."""
        self.directory = directory
        self.fingerprint_key = FingerprintKey.load_or_create(directory)
        self._db = open_database(directory, migrations)
        self.controls = Controls(self._db)
        self.tokens = Tokens(self._db)
        self.credentials = Credentials(self._db)
        self.audit_chain = AuditChain(self._db)
        self.approvals = Approvals(self._db)
        self.meta = Meta(self._db)

    @classmethod
    def open(
        cls, directory: Path | None, migrations: Sequence[str] = MIGRATIONS
    ) -> StateStore:
        """Open the store, refusing (StateError) an unset, missing or unwritable directory.

        `migrations` is the schema's list; tests pass a longer one to exercise migrating.
        """
        return cls(check_directory(directory), migrations)

    @property
    def schema_version(self) -> int:
        """The schema version of the open database."""
        return int(self._db.query("PRAGMA user_version")[0][0])

    def flush(self) -> None:
        """Write what is batched in memory (credential last-used times)."""
        self.credentials.flush()

    def close(self) -> None:
        """Flush and close the database."""
        self.flush()
        self._db.close()
