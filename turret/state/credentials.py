"""Credential key age, tracked by a keyed fingerprint of each credential's value.

systemd copies credentials at start, so file times say nothing about a credential's age; a
fingerprint that changes does. The fingerprint is an HMAC-SHA256 of the value under a key kept
in `fingerprint.key` (32 random bytes, mode 0600) beside the database, never in it: the
database alone, or a fingerprint shown by `turret credentials`, cannot be checked against a
guessed value. Whoever holds both the key and the database can test guesses, as they could
with any verifier; the state directory is Turret's own (0700 under `DynamicUser=`).

`touch_used` is called on the request path, so it only records the time in memory; `flush()`
writes the batch in one transaction (on a timer, at reload and at shutdown).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import re
import secrets
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path

from turret.errors import StateError
from turret.state.db import FILE_MODE, HOW_TO_FIX, Database

KEY_NAME = "fingerprint.key"
KEY_BYTES = 32
# 16 hex digits (64 bits) are stored: a rotation that keeps the same stored fingerprint is a
# 2^-64 chance; `short()` gives the 8 shown to operators.
FINGERPRINT_HEX = 16
_FINGERPRINT = re.compile(rf"[0-9a-f]{{{FINGERPRINT_HEX}}}")


class FingerprintKey:
    """The key credential fingerprints are computed under."""

    def __init__(self, key: bytes) -> None:
        self._key = key

    def __repr__(self) -> str:
        return "FingerprintKey(<redacted>)"

    @classmethod
    def load_or_create(cls, directory: Path) -> FingerprintKey:
        """Read `fingerprint.key`, creating it first if it does not exist."""
        path = directory / KEY_NAME
        if not os.path.lexists(path):
            _create_key(path)
        return cls._read(path)

    @classmethod
    def _read(cls, path: Path) -> FingerprintKey:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
            with os.fdopen(fd, "rb") as f:
                key = f.read(KEY_BYTES + 1)
        except OSError as exc:
            raise StateError(f"cannot read {path}: {exc.strerror}; {HOW_TO_FIX}") from None
        if len(key) != KEY_BYTES:
            raise StateError(
                f"{path} is not a {KEY_BYTES}-byte key (it is {len(key)} bytes): remove it and "
                "Turret makes a new one (every credential then counts as first seen)"
            )
        return cls(key)

    def fingerprint(self, value: bytes) -> str:
        """The stored fingerprint of a credential value."""
        return hmac.new(self._key, value, hashlib.sha256).hexdigest()[:FINGERPRINT_HEX]


def _create_key(path: Path) -> None:
    """Write a new key whole, then link it into place: a crash never leaves half a key, and of
    two processes creating it at once, the first link wins and both read that key."""
    tmp = path.with_name(f".{KEY_NAME}.{secrets.token_hex(8)}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, FILE_MODE)
        try:
            os.write(fd, secrets.token_bytes(KEY_BYTES))
            os.fsync(fd)
        finally:
            os.close(fd)
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)
        dirfd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dirfd)
        finally:
            os.close(dirfd)
    except OSError as exc:
        raise StateError(f"cannot create {path}: {exc.strerror}; {HOW_TO_FIX}") from None
    finally:
        tmp.unlink(missing_ok=True)


def short(fingerprint: str) -> str:
    """The 8 hex digits shown to an operator."""
    return fingerprint[:8]


@dataclass(frozen=True)
class CredentialAge:
    """What the store knows of a credential's age."""

    name: str
    fingerprint: str
    previous_fingerprint: str | None
    first_seen: float
    last_changed: float
    last_used: float | None


@dataclass(frozen=True)
class Observation:
    """The result of observing a credential at start or reload."""

    age: CredentialAge
    changed: bool  # the fingerprint differs from the one recorded (a rotation)
    new: bool  # the credential was never seen before


class Credentials:
    """The credential-age table, with last-used times batched in memory."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._used: dict[str, float] = {}
        self._used_lock = threading.Lock()

    def observe(self, name: str, fingerprint: str, at: float) -> Observation:
        """Record that `name` currently has `fingerprint`; a new fingerprint is a rotation."""
        if not _FINGERPRINT.fullmatch(fingerprint):
            raise ValueError("observe() takes FingerprintKey.fingerprint(value), never a value")
        with self._db.transaction() as conn:
            old = conn.execute(
                "SELECT fingerprint FROM credentials WHERE name = ?", (name,)
            ).fetchone()
            if old is None:
                conn.execute(
                    "INSERT INTO credentials (name, fingerprint, first_seen, last_changed)"
                    " VALUES (?, ?, ?, ?)",
                    (name, fingerprint, at, at),
                )
            elif old["fingerprint"] != fingerprint:
                conn.execute(
                    "UPDATE credentials SET previous_fingerprint = fingerprint, fingerprint = ?,"
                    " last_changed = ? WHERE name = ?",
                    (fingerprint, at, name),
                )
            age = _age(conn.execute("SELECT * FROM credentials WHERE name = ?", (name,)).fetchone())
        changed = old is not None and old["fingerprint"] != fingerprint
        return Observation(age, changed=changed, new=old is None)

    def touch_used(self, name: str, at: float) -> None:
        """Note that `name` was used at `at` (in memory until `flush()`)."""
        with self._used_lock:
            if at > self._used.get(name, float("-inf")):
                self._used[name] = at

    def flush(self) -> None:
        """Write the batched last-used times in one transaction."""
        with self._used_lock:
            batch, self._used = self._used, {}
        if not batch:
            return
        with self._db.transaction() as conn:
            conn.executemany(
                "UPDATE credentials SET last_used = max(coalesce(last_used, ?), ?) WHERE name = ?",
                [(at, at, name) for name, at in batch.items()],
            )

    def all(self) -> list[CredentialAge]:
        """Every tracked credential, by name (last-used times as of the last flush)."""
        rows = self._db.query("SELECT * FROM credentials ORDER BY name")
        return [_age(r) for r in rows]

    def forget(self, name: str) -> bool:
        """Stop tracking a credential that left the configuration; False if it was unknown."""
        return bool(
            self._db.execute("DELETE FROM credentials WHERE name = ? RETURNING name", (name,))
        )


def _age(r: sqlite3.Row) -> CredentialAge:
    return CredentialAge(
        r["name"], r["fingerprint"], r["previous_fingerprint"], r["first_seen"],
        r["last_changed"], r["last_used"],
    )
