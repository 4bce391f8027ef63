"""Opening the store: the directory, the file, its modes, restarts and schema migrations."""

from __future__ import annotations

import os
import sqlite3
import stat
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from turret.errors import StartupError
from turret.state import (
    DB_NAME,
    NewToken,
    Seal,
    StateError,
    StateStore,
    by_uid,
    resolve_state_dir,
)
from turret.state.schema import MIGRATIONS, V1

DIGEST = "ab" * 32
NOBODY = 65534


def _restart_script(state_dir: Path) -> str:
    """A child process that writes through the store and dies without closing it."""
    return f"""
import os, signal
from pathlib import Path
from turret.state import NewToken, StateStore
s = StateStore.open(Path({str(state_dir)!r}))
s.controls.seal("drill", "uid:0", 10.0)
s.tokens.insert(NewToken("t1", {DIGEST!r}, "alice", None, "{{}}", 1.0, 99.0, 3, False))
s.tokens.use("t1")
s.audit_chain.advance(7, "c0ffee", 11.0)
os.kill(os.getpid(), signal.SIGKILL)
"""


# --- restarts ---------------------------------------------------------------------------------


def test_store_survives_close_and_reopen(open_store: Callable[[], StateStore]) -> None:
    first = open_store()
    first.controls.seal("incident", by_uid(0), 5.0)
    first.controls.revoke_agent("mallory", "leaked", by_uid(1000), 6.0)
    first.tokens.insert(NewToken("t1", DIGEST, "alice", None, "{}", 1.0, 99.0, None, True))
    first.tokens.use("t1")
    first.meta.set("last_checkin", "123.0", 7.0)
    first.close()

    again = open_store()
    assert again.controls.sealed() is not None
    assert set(again.controls.revoked_agents()) == {"mallory"}
    token = again.tokens.get("t1")
    assert token is not None
    assert token.uses == 1
    assert again.meta.get("last_checkin") == "123.0"


def test_store_survives_a_killed_process(state_dir: Path, open_store: Callable[[], StateStore]
                                         ) -> None:
    """What a call recorded before returning is there after SIGKILL (WAL, synchronous=FULL)."""
    child = subprocess.run(  # noqa: S603 -- our own interpreter and script
        [sys.executable, "-c", _restart_script(state_dir)], check=False, cwd=Path.cwd()
    )
    assert child.returncode == -9
    store = open_store()
    seal = store.controls.sealed()
    assert seal is not None
    assert seal.reason == "drill"
    token = store.tokens.get("t1")
    assert token is not None
    assert token.uses == 1
    head = store.audit_chain.head()
    assert head is not None
    assert (head.seq, head.chain) == (7, "c0ffee")


def test_store_database_settings(store: StateStore, state_dir: Path) -> None:
    # The store's own connection: synchronous and foreign_keys are set per connection.
    conn = store._db.conn
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert store.schema_version == len(MIGRATIONS)
    assert (state_dir / DB_NAME).exists()


# --- file modes -------------------------------------------------------------------------------


@pytest.fixture
def open_umask() -> Iterator[None]:
    """Run with umask 0, the worst a service manager could hand Turret."""
    old = os.umask(0)
    yield
    os.umask(old)


@pytest.mark.usefixtures("open_umask")
def test_store_files_are_owner_only(state_dir: Path, open_store: Callable[[], StateStore]) -> None:
    store = open_store()
    store.tokens.insert(NewToken("t1", DIGEST, "alice", None, "{}", 1.0, 99.0, None, True))
    names = {p.name for p in state_dir.iterdir()}
    assert names == {DB_NAME, f"{DB_NAME}-wal", f"{DB_NAME}-shm", "fingerprint.key"}
    for p in state_dir.iterdir():
        assert stat.S_IMODE(p.stat().st_mode) == 0o600, p.name


def test_store_tightens_a_readable_database(state_dir: Path,
                                            open_store: Callable[[], StateStore]) -> None:
    db = state_dir / DB_NAME
    db.touch(mode=0o644)
    db.chmod(0o644)
    open_store()
    assert stat.S_IMODE(db.stat().st_mode) == 0o600


# --- the directory and the files in it are refused with a message that says what to do ---------


def _refused(directory: Path | None) -> str:
    with pytest.raises(StateError) as info:
        StateStore.open(directory)
    assert isinstance(info.value, StartupError)
    message = str(info.value)
    assert "StateDirectory=turret" in message
    assert "--state-dir" in message
    return message


def test_store_refuses_no_directory() -> None:
    assert "no state directory" in _refused(None)


def test_store_refuses_missing_directory(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    message = _refused(missing)
    assert str(missing) in message
    assert "does not exist" in message


def test_store_refuses_a_file_as_directory(tmp_path: Path) -> None:
    f = tmp_path / "state"
    f.write_text("")
    message = _refused(f)
    assert str(f) in message
    assert "not a directory" in message


def test_store_refuses_a_directory_as_database(state_dir: Path) -> None:
    (state_dir / DB_NAME).mkdir()
    assert str(state_dir / DB_NAME) in _refused(state_dir)


@pytest.mark.parametrize("name", [DB_NAME, "fingerprint.key"])
def test_store_refuses_a_planted_symlink(state_dir: Path, tmp_path: Path, name: str) -> None:
    """A symlink in the state directory is not followed (it could point at anything)."""
    target = tmp_path / "elsewhere"
    target.write_bytes(b"x" * 32)
    (state_dir / name).symlink_to(target)
    assert name in _refused(state_dir)
    assert target.read_bytes() == b"x" * 32


def test_store_refuses_a_bad_fingerprint_key(state_dir: Path) -> None:
    (state_dir / "fingerprint.key").write_bytes(b"short")
    (state_dir / "fingerprint.key").chmod(0o600)
    with pytest.raises(StateError, match="not a 32-byte key"):
        StateStore.open(state_dir)


def _open_as(uid: int | None, directory: Path) -> str:
    """Try to open the store in a forked child running as `uid`; return its StateError."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: drop to `uid`, try, report, and never return into pytest
        code = 1
        try:
            os.close(read)
            if uid is not None:
                os.setgroups([])
                os.setgid(uid)
                os.setuid(uid)
            StateStore.open(directory)
        except StateError as exc:
            os.write(write, str(exc).encode())
            code = 3
        finally:
            os._exit(code)
    os.close(write)
    with os.fdopen(read, "rb") as f:
        message = f.read().decode()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 3, message
    return message


def test_store_refuses_unwritable_directory() -> None:
    """A 0500 directory. Root ignores modes, so as root the check runs as `nobody`."""
    base = Path(tempfile.mkdtemp(prefix="turret-state-"))  # under /tmp: nobody can reach it
    locked = base / "state"
    try:
        base.chmod(0o755)
        locked.mkdir(mode=0o500)
        locked.chmod(0o500)
        message = _open_as(NOBODY if os.geteuid() == 0 else None, locked)
        assert f"state directory {locked} is not writable" in message
        assert "StateDirectory=turret" in message
        assert list(locked.iterdir()) == []
    finally:
        locked.rmdir()
        base.rmdir()


@pytest.mark.parametrize(
    ("cli", "env", "expected"),
    [
        ("/dev/state", {"STATE_DIRECTORY": "/var/lib/turret"}, "/dev/state"),
        (None, {"STATE_DIRECTORY": "/var/lib/turret"}, "/var/lib/turret"),
        (None, {"STATE_DIRECTORY": "/var/lib/turret:/var/lib/other"}, "/var/lib/turret"),
        (None, {"STATE_DIRECTORY": ""}, None),
        (None, {}, None),
    ],
)
def test_resolve_state_dir_prefers_the_flag(
    cli: str | None, env: dict[str, str], expected: str | None
) -> None:
    found = resolve_state_dir(cli, env)
    assert (str(found) if found else None) == expected


# --- schema versions and migrations -----------------------------------------------------------

V2_TEST = "ALTER TABLE meta ADD COLUMN note TEXT NOT NULL DEFAULT '';"


def _v1_by_hand(state_dir: Path) -> None:
    """A database as the first release wrote it, made without the store's code."""
    conn = sqlite3.connect(state_dir / DB_NAME)
    conn.executescript(V1)
    conn.execute("INSERT INTO meta VALUES ('last_checkin', '42.0', 1.0)")
    conn.execute("INSERT INTO agent_revocations VALUES ('mallory', 'leaked', 'uid:0', 2.0)")
    conn.execute("PRAGMA user_version = 1")
    conn.commit()
    conn.close()
    (state_dir / DB_NAME).chmod(0o600)


def _user_version(state_dir: Path) -> int:
    conn = sqlite3.connect(state_dir / DB_NAME)
    try:
        return int(conn.execute("PRAGMA user_version").fetchone()[0])
    finally:
        conn.close()


def test_store_opens_a_v1_database(state_dir: Path) -> None:
    _v1_by_hand(state_dir)
    store = StateStore.open(state_dir)
    try:
        assert store.schema_version == len(MIGRATIONS)
        assert store.meta.get("last_checkin") == "42.0"
        assert set(store.controls.revoked_agents()) == {"mallory"}
    finally:
        store.close()


def test_store_migrates_an_older_database_forward(state_dir: Path) -> None:
    _v1_by_hand(state_dir)
    store = StateStore.open(state_dir, (*MIGRATIONS, V2_TEST))
    try:
        assert store.schema_version == len(MIGRATIONS) + 1
        assert store.meta.get("last_checkin") == "42.0"
        cols = {r[1] for r in store._db.conn.execute("PRAGMA table_info(meta)")}
        assert "note" in cols
    finally:
        store.close()


def test_store_rolls_back_a_failing_migration(state_dir: Path) -> None:
    _v1_by_hand(state_dir)
    broken = "CREATE TABLE half_done (x INTEGER) STRICT;\nINSERT INTO no_such_table VALUES (1);"
    with pytest.raises(StateError, match=r"schema version 2 failed.*unchanged at version 1"):
        StateStore.open(state_dir, (*MIGRATIONS, broken))
    assert _user_version(state_dir) == 1
    conn = sqlite3.connect(state_dir / DB_NAME)
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    conn.close()
    assert "half_done" not in tables


def test_store_migrates_an_empty_file(state_dir: Path) -> None:
    (state_dir / DB_NAME).touch(mode=0o600)
    store = StateStore.open(state_dir)
    try:
        assert store.schema_version == len(MIGRATIONS)
    finally:
        store.close()


@pytest.mark.parametrize("ahead", [1, 40])
def test_store_refuses_a_newer_schema(state_dir: Path, ahead: int) -> None:
    _v1_by_hand(state_dir)
    newer = len(MIGRATIONS) + ahead
    conn = sqlite3.connect(state_dir / DB_NAME)
    conn.execute(f"PRAGMA user_version = {newer}")
    conn.close()
    with pytest.raises(StateError, match=f"schema version {newer}, newer than this Turret"):
        StateStore.open(state_dir)
    assert _user_version(state_dir) == newer


def test_store_reads_do_not_wait_for_a_write(store: StateStore) -> None:
    """A query on the event loop is answered while another thread holds a write open."""
    store.controls.seal("drill", by_uid(0), 1.0)
    inside, release = threading.Event(), threading.Event()

    def slow_writer() -> None:
        with store._db.transaction() as conn:  # the store's write path, held open
            conn.execute("DELETE FROM seal")
            inside.set()
            release.wait()

    writer = threading.Thread(target=slow_writer)
    writer.start()
    try:
        assert inside.wait(10)
        # The reader sees the last committed state, not the writer's uncommitted delete.
        assert store.controls.sealed() == Seal("drill", "uid:0", 1.0)
    finally:
        release.set()
        writer.join()
    assert store.controls.sealed() is None
