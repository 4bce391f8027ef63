"""The schema of `turret.db`, as an ordered list of migrations.

`MIGRATIONS[N-1]` moves the file from schema version N-1 to N (`PRAGMA user_version`). A
migration, once released, is never edited: a change is a new migration appended to the list.
Every table is `STRICT` (SQLite checks column types) and every time is a float of seconds since
the epoch (UTC) passed in by the caller.

Nothing here holds a secret: tokens are kept as their SHA-256 digest, credentials as a keyed
fingerprint, approvals as a hash of the call and a redacted summary of its parameters.

Version 1:

- `meta(key, value, updated)`: small named values (last check-in, heartbeat state).
- `seal(id=1, reason, by, at)`: one row while Turret is sealed (the killswitch), none otherwise.
- `agent_revocations(agent, reason, by, at)`: one row per revoked configured agent.
- `derived_tokens(id, digest, parent_id, agent, scope, created, expires, uses, max_uses,
  may_derive, depth, description, revoked_at, revoked_by)`: leases. `parent_id` is NULL for a
  token minted by a configured agent (depth 1), else the deriving token (depth = parent + 1,
  same agent, never outliving it); `scope` is JSON text; `uses` counts every request made.
- `credentials(name, fingerprint, previous_fingerprint, first_seen, last_changed, last_used)`:
  key age by keyed fingerprint; the key is `fingerprint.key` beside the database, never in it.
- `audit_chain(id=1, seq, chain, at)`: the head of the tamper-evident audit chain.
- `approvals(id, call_hash, agent, capability, params_summary, status, created, expires,
  decided_at, approver_uid, reason, executed_at, result_status)`: human approvals; `status` is
  pending, approved, denied, expired or executed.
"""

from __future__ import annotations

V1 = """
CREATE TABLE meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    updated REAL NOT NULL
) STRICT;

CREATE TABLE seal (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    reason TEXT NOT NULL,
    by TEXT NOT NULL,
    at REAL NOT NULL
) STRICT;

CREATE TABLE agent_revocations (
    agent TEXT PRIMARY KEY,
    reason TEXT NOT NULL,
    by TEXT NOT NULL,
    at REAL NOT NULL
) STRICT;

CREATE TABLE derived_tokens (
    id TEXT PRIMARY KEY,
    digest TEXT NOT NULL UNIQUE CHECK (length(digest) = 64),
    parent_id TEXT REFERENCES derived_tokens(id) ON DELETE CASCADE,
    agent TEXT NOT NULL,
    scope TEXT NOT NULL CHECK (json_valid(scope)),
    created REAL NOT NULL,
    expires REAL NOT NULL,
    uses INTEGER NOT NULL DEFAULT 0 CHECK (uses >= 0),
    max_uses INTEGER CHECK (max_uses IS NULL OR max_uses >= 0),
    may_derive INTEGER NOT NULL CHECK (may_derive IN (0, 1)),
    depth INTEGER NOT NULL CHECK (depth >= 1),
    description TEXT NOT NULL DEFAULT '',
    revoked_at REAL,
    revoked_by TEXT,
    CHECK ((parent_id IS NULL) = (depth = 1))
) STRICT;
CREATE INDEX derived_tokens_agent ON derived_tokens(agent);
CREATE INDEX derived_tokens_parent ON derived_tokens(parent_id);
CREATE INDEX derived_tokens_expires ON derived_tokens(expires);

CREATE TABLE credentials (
    name TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    previous_fingerprint TEXT,
    first_seen REAL NOT NULL,
    last_changed REAL NOT NULL,
    last_used REAL
) STRICT;

CREATE TABLE audit_chain (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    seq INTEGER NOT NULL CHECK (seq >= 0),
    chain TEXT NOT NULL,
    at REAL NOT NULL
) STRICT;

CREATE TABLE approvals (
    id TEXT PRIMARY KEY,
    call_hash TEXT NOT NULL CHECK (length(call_hash) = 64),
    agent TEXT NOT NULL,
    capability TEXT NOT NULL,
    params_summary TEXT NOT NULL CHECK (json_valid(params_summary)),
    status TEXT NOT NULL
        CHECK (status IN ('pending', 'approved', 'denied', 'expired', 'executed')),
    created REAL NOT NULL,
    expires REAL NOT NULL,
    decided_at REAL,
    approver_uid INTEGER,
    reason TEXT,
    executed_at REAL,
    result_status INTEGER
) STRICT;
CREATE INDEX approvals_status ON approvals(status, expires);
"""

MIGRATIONS: tuple[str, ...] = (V1,)
