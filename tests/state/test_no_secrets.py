"""The database never holds a secret: canaries written through the API are not in its bytes."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

from turret.auth import new_token, token_sha256
from turret.echo import encodings
from turret.state import DB_NAME, NewToken, StateStore, by_uid


def _files(state_dir: Path) -> dict[str, bytes]:
    """The bytes of the database and its WAL and shared-memory files, as they are now."""
    names = (DB_NAME, f"{DB_NAME}-wal", f"{DB_NAME}-shm")
    return {n: (state_dir / n).read_bytes() for n in names if (state_dir / n).exists()}


def _assert_absent(files: dict[str, bytes], secrets: dict[str, bytes]) -> None:
    for name, data in files.items():
        for label, secret in secrets.items():
            for form in encodings(secret):
                assert form not in data, f"{label} found in {name}"


def _write_everything(store: StateStore, tokens: list[str], canaries: dict[str, str]) -> None:
    for n, token in enumerate(tokens):
        parent = f"t{n - 1}" if n else None
        store.tokens.insert(NewToken(f"t{n}", token_sha256(token), "alice", parent,
                                     '{"proxy": []}', 1.0, 100.0 - n, 5, True, "sub-agent"))
        store.tokens.use(f"t{n}")
    for name, value in canaries.items():
        store.credentials.observe(name, store.fingerprint_key.fingerprint(value.encode()), 1.0)
        store.credentials.touch_used(name, 2.0)
    store.flush()
    store.approvals.create(
        "ap1", call_hash=hashlib.sha256(b"call").hexdigest(), agent="alice",
        capability="gitea.create_issue", params_summary=json.dumps({"token": "<redacted>"}),
        created=1.0, expires=9.0,
    )
    store.controls.seal("drill", by_uid(0), 3.0)
    store.controls.revoke_agent("mallory", "leaked", by_uid(0), 3.0)
    store.audit_chain.advance(1, "ab" * 32, 3.0)
    store.tokens.revoke_subtree("t0", "uid:0", 4.0)


def test_state_files_hold_no_secret(
    state_dir: Path, open_store: Callable[[], StateStore], canaries: dict[str, str]
) -> None:
    tokens = [new_token() for _ in range(4)]
    store = open_store()
    _write_everything(store, tokens, canaries)
    key = (state_dir / "fingerprint.key").read_bytes()
    secrets = {f"token {n}": t.encode() for n, t in enumerate(tokens)}
    secrets |= {f"credential {k}": v.encode() for k, v in canaries.items()}
    secrets["fingerprint key"] = key
    # A plain hash of a credential would let anyone holding the file test guesses without the key.
    plain = {f"sha256 of {k}": hashlib.sha256(v.encode()).hexdigest()[:16].encode()
             for k, v in canaries.items()}

    live = _files(state_dir)
    assert f"{DB_NAME}-wal" in live  # the WAL is checked while it still holds the writes
    _assert_absent(live, secrets | plain)
    store.close()
    _assert_absent(_files(state_dir), secrets | plain)
    # The canaries' digests are what the tokens are found by: the check above looked at real data.
    assert token_sha256(tokens[0]).encode() in _files(state_dir)[DB_NAME]
