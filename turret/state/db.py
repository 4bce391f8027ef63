"""The database file: where it lives, how it is opened, and how its schema moves forward.

One SQLite file, `turret.db`, in the state directory. The connections are opened once, in
autocommit mode (`isolation_level=None`) so that every transaction is explicit: a single
statement is its own transaction, and anything that must change several rows together runs
inside `Database.transaction()` (`BEGIN IMMEDIATE` ... `COMMIT`).

Thread-safety: two connections, both opened with `check_same_thread=False`: one for writes,
used under `Database.lock`, and one read-only connection for queries, under its own lock. In
WAL mode a reader never waits for a writer, so a query (is Turret sealed? is this agent
revoked?) made on the event loop is not held up by a write that another thread is fsyncing.
A write is durable when it returns (`synchronous=FULL`), which costs an fsync (a few ms on a
VM disk): the server should make writes on the request path through `asyncio.to_thread`;
queries take microseconds and can run on the loop.
"""

from __future__ import annotations

import os
import sqlite3
import stat
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

from turret.errors import StateError

DB_NAME = "turret.db"
FILE_MODE = 0o600
# How long a statement waits for another connection's write lock (another Turret process on the
# same directory, or an operator's `sqlite3` shell) before it fails.
BUSY_TIMEOUT_MS = 5000
HOW_TO_FIX = (
    "run Turret under systemd with StateDirectory=turret (it sets $STATE_DIRECTORY), "
    "or pass --state-dir DIR with a directory Turret's user can write"
)


def resolve_state_dir(cli: str | None, environ: Mapping[str, str]) -> Path | None:
    """The state directory: `--state-dir` first, then `$STATE_DIRECTORY`, else none.

    systemd sets `$STATE_DIRECTORY` to a colon-separated list when a unit names several
    directories; Turret's own is the first.
    """
    if cli:
        return Path(cli)
    env = environ.get("STATE_DIRECTORY", "")
    first = env.split(":", 1)[0]
    return Path(first) if first else None


def check_directory(directory: Path | None) -> Path:
    """Refuse a state directory that is unset, missing, not a directory or not writable."""
    if directory is None:
        raise StateError(f"no state directory is configured: {HOW_TO_FIX}")
    if not directory.exists():
        raise StateError(f"state directory {directory} does not exist: {HOW_TO_FIX}")
    if not directory.is_dir():
        raise StateError(f"state directory {directory} is not a directory: {HOW_TO_FIX}")
    # os.access answers for the real uid and sees read-only mounts; root passes it whatever the
    # mode bits say (and can then write), so the mode is only tested for other users.
    if not os.access(directory, os.W_OK | os.X_OK):
        raise StateError(f"state directory {directory} is not writable: {HOW_TO_FIX}")
    return directory


def create_private(path: Path) -> None:
    """Create `path` (if it does not exist) readable and writable by its owner only."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, FILE_MODE)
    try:
        if stat.S_IMODE(os.fstat(fd).st_mode) != FILE_MODE:
            os.fchmod(fd, FILE_MODE)
    finally:
        os.close(fd)


class Database:
    """The connections to `turret.db`, their locks, and explicit write transactions."""

    def __init__(self, conn: sqlite3.Connection, reader: sqlite3.Connection, path: Path) -> None:
        self.conn = conn
        self.path = path
        self.lock = threading.RLock()
        self._reader = reader
        self._read_lock = threading.Lock()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """Hold the write lock and run the block in one write transaction; roll back on error."""
        with self.lock:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield self.conn
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
            self.conn.execute("COMMIT")

    def execute(
        self, sql: str, params: Sequence[object] | Mapping[str, object] = ()
    ) -> list[sqlite3.Row]:
        """Run one writing statement (its own transaction) and return the rows it produced."""
        with self.lock:
            return self.conn.execute(sql, params).fetchall()

    def query(
        self, sql: str, params: Sequence[object] | Mapping[str, object] = ()
    ) -> list[sqlite3.Row]:
        """Run one read-only statement on the reader: it sees every committed write."""
        with self._read_lock:
            return self._reader.execute(sql, params).fetchall()

    def close(self) -> None:
        """Close both connections (the last one out folds the WAL back into the database)."""
        with self._read_lock:
            self._reader.close()
        with self.lock:
            self.conn.close()


def open_database(directory: Path, migrations: Sequence[str]) -> Database:
    """Open (creating if needed) `turret.db` in a checked directory and migrate it.

    Raises `StateError` when the file cannot be opened or written, or when its schema is newer
    than `migrations` knows.
    """
    path = directory / DB_NAME
    try:
        create_private(path)
        conn = _connect(path)
    except (OSError, sqlite3.Error) as exc:
        raise StateError(f"cannot open the state database {path}: {exc}; {HOW_TO_FIX}") from None
    try:
        _configure(conn)
        migrate(conn, path, migrations)
        reader = _connect(path)
        reader.execute("PRAGMA query_only = ON")
        _private_sidecars(path)
    except StateError:
        conn.close()
        raise
    except (OSError, sqlite3.Error) as exc:
        conn.close()
        raise StateError(f"cannot use the state database {path}: {exc}; {HOW_TO_FIX}") from None
    return Database(conn, reader, path)


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.row_factory = sqlite3.Row
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    return conn


def _configure(conn: sqlite3.Connection) -> None:
    mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    if mode != "wal":
        raise StateError(f"the state database cannot use WAL (journal_mode is {mode})")
    # FULL: every commit is fsynced before it returns, so what the store said it recorded
    # survives a power loss (the audit chain head and single-use approvals depend on it).
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("PRAGMA foreign_keys = ON")


def _private_sidecars(path: Path) -> None:
    """SQLite gives the -wal and -shm files the database's mode; make sure of it."""
    for suffix in ("-wal", "-shm"):
        side = path.with_name(path.name + suffix)
        if side.exists() and stat.S_IMODE(side.stat().st_mode) != FILE_MODE:
            side.chmod(FILE_MODE)


def schema_version(conn: sqlite3.Connection) -> int:
    """The schema version recorded in the file (`PRAGMA user_version`)."""
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def migrate(conn: sqlite3.Connection, path: Path, migrations: Sequence[str]) -> None:
    """Apply each migration the file has not seen, in order, each in its own transaction.

    Migration N (1-based) moves the schema from version N-1 to N; a failing migration is rolled
    back whole, leaving the file at the version before it.
    """
    current = schema_version(conn)
    known = len(migrations)
    if current > known:
        raise StateError(
            f"the state database {path} has schema version {current}, newer than this "
            f"Turret knows ({known}): run the newer Turret, or restore a backup made for this one"
        )
    for version in range(current + 1, known + 1):
        try:
            # executescript runs the whole migration and the version bump as one transaction:
            # user_version lives in the file header, which is transactional.
            conn.executescript(
                f"BEGIN IMMEDIATE;\n{migrations[version - 1]}\n"
                f"PRAGMA user_version = {version};\nCOMMIT;"
            )
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise StateError(
                f"migrating the state database {path} to schema version {version} "
                f"failed: {exc}; the file is unchanged at version {version - 1}"
            ) from None
