"""Derived tokens (leases): kept as a SHA-256 digest of the token with their metadata.

The token itself is never stored: it is found by `turret.auth.token_sha256(token)` (the same
digest the config keeps for agent tokens), and `insert` refuses anything that is not a 64-hex
digest. A token is looked up by digest at every use; a
b-tree lookup of a digest of a 256-bit random token tells a timing observer nothing useful
about any token, so no constant-time comparison is needed here.

The store keeps the tree consistent (a child has its parent's agent, depth + 1, and never
outlives it), so pruning a parent never strands a live child; whether a child may be minted
at all (scope, `may_derive`, depth limit, TTL) is policy, decided before `insert`.
"""

from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass

from turret.state.db import Database
from turret.tokens import NewToken  # the value is pure: the pipeline builds it

_DIGEST = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class DerivedToken:
    """A derived token as stored: never the token, only its digest."""

    id: str
    digest: str
    parent_id: str | None
    agent: str
    scope: str
    created: float
    expires: float
    uses: int
    max_uses: int | None
    may_derive: bool
    depth: int
    description: str
    revoked_at: float | None
    revoked_by: str | None

    def uses_left(self) -> int | None:
        """How many more requests it may make, or None for no limit."""
        return None if self.max_uses is None else max(0, self.max_uses - self.uses)


def _row(r: sqlite3.Row) -> DerivedToken:
    return DerivedToken(
        r["id"], r["digest"], r["parent_id"], r["agent"], r["scope"], r["created"], r["expires"],
        r["uses"], r["max_uses"], bool(r["may_derive"]), r["depth"], r["description"],
        r["revoked_at"], r["revoked_by"],
    )


class Tokens:
    """The derived-token table."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def insert(self, new: NewToken) -> DerivedToken:
        """Record a minted token; ValueError if it would break the tree's invariants."""
        if not _DIGEST.fullmatch(new.digest):
            raise ValueError("a derived token is stored by its SHA-256 hex digest, never itself")
        with self._db.transaction() as conn:
            depth = 1
            if new.parent_id is not None:
                parent = conn.execute(
                    "SELECT agent, depth, expires FROM derived_tokens WHERE id = ?",
                    (new.parent_id,),
                ).fetchone()
                if parent is None:
                    raise ValueError(f"parent token {new.parent_id} is not recorded")
                if parent["agent"] != new.agent or new.expires > parent["expires"]:
                    raise ValueError("a child token must have its parent's agent and expire first")
                depth = parent["depth"] + 1
            row = conn.execute(
                "INSERT INTO derived_tokens (id, digest, parent_id, agent, scope, created,"
                " expires, max_uses, may_derive, depth, description)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING *",
                (new.id, new.digest, new.parent_id, new.agent, new.scope, new.created,
                 new.expires, new.max_uses, int(new.may_derive), depth, new.description),
            ).fetchone()
        return _row(row)

    def get(self, token_id: str) -> DerivedToken | None:
        """The token with this id, or None."""
        rows = self._db.query("SELECT * FROM derived_tokens WHERE id = ?", (token_id,))
        return _row(rows[0]) if rows else None

    def by_digest(self, digest: str) -> DerivedToken | None:
        """The token whose digest this is (`token_sha256`), or None."""
        rows = self._db.query("SELECT * FROM derived_tokens WHERE digest = ?", (digest,))
        return _row(rows[0]) if rows else None

    def by_agent(self, agent: str) -> list[DerivedToken]:
        """Every recorded token of an agent, oldest first."""
        rows = self._db.query(
            "SELECT * FROM derived_tokens WHERE agent = ? ORDER BY created, id", (agent,)
        )
        return [_row(r) for r in rows]

    def descendants(self, token_id: str) -> list[DerivedToken]:
        """Every token below `token_id` (not itself), shallowest first."""
        rows = self._db.query(
            "WITH RECURSIVE subtree(id) AS ("
            " SELECT id FROM derived_tokens WHERE id = :root"
            " UNION SELECT t.id FROM derived_tokens t JOIN subtree s ON t.parent_id = s.id)"
            " SELECT * FROM derived_tokens"
            " WHERE id IN (SELECT id FROM subtree) AND id != :root ORDER BY depth, created, id",
            {"root": token_id},
        )
        return [_row(r) for r in rows]

    def ancestry(self, token_id: str) -> list[DerivedToken]:
        """The token and its ancestors, root first (each must allow an action at every use)."""
        rows = self._db.query(
            "WITH RECURSIVE up(id, parent_id) AS ("
            " SELECT id, parent_id FROM derived_tokens WHERE id = ?"
            " UNION SELECT t.id, t.parent_id FROM derived_tokens t JOIN up ON t.id = up.parent_id)"
            " SELECT * FROM derived_tokens WHERE id IN (SELECT id FROM up) ORDER BY depth",
            (token_id,),
        )
        return [_row(r) for r in rows]

    def use(self, token_id: str) -> int | None:
        """Count one use and return the new count; None when no use is left (or no such token).

        One statement: the check and the increment cannot be split by a concurrent caller, in
        this process or another one on the same file.
        """
        rows = self._db.execute(
            "UPDATE derived_tokens SET uses = uses + 1"
            " WHERE id = ? AND (max_uses IS NULL OR uses < max_uses) RETURNING uses",
            (token_id,),
        )
        return int(rows[0]["uses"]) if rows else None

    def revoke_subtree(self, token_id: str, by: str, at: float) -> list[str]:
        """Revoke a token and every descendant; return the ids newly revoked, sorted."""
        rows = self._db.execute(
            "WITH RECURSIVE subtree(id) AS ("
            " SELECT id FROM derived_tokens WHERE id = :root"
            " UNION SELECT t.id FROM derived_tokens t JOIN subtree s ON t.parent_id = s.id)"
            " UPDATE derived_tokens SET revoked_at = :at, revoked_by = :by"
            " WHERE id IN (SELECT id FROM subtree) AND revoked_at IS NULL RETURNING id",
            {"root": token_id, "at": at, "by": by},
        )
        return sorted(r["id"] for r in rows)

    def revoke_agent_tokens(self, agent: str, by: str, at: float) -> list[str]:
        """Revoke every token of an agent (the agent itself was revoked); return the ids."""
        rows = self._db.execute(
            "UPDATE derived_tokens SET revoked_at = ?, revoked_by = ?"
            " WHERE agent = ? AND revoked_at IS NULL RETURNING id",
            (at, by, agent),
        )
        return sorted(r["id"] for r in rows)

    def revoke_all(self, by: str, at: float) -> list[str]:
        """Revoke every derived token (the killswitch); return the ids."""
        rows = self._db.execute(
            "UPDATE derived_tokens SET revoked_at = ?, revoked_by = ?"
            " WHERE revoked_at IS NULL RETURNING id",
            (at, by),
        )
        return sorted(r["id"] for r in rows)

    def prune_expired(self, before: float) -> list[str]:
        """Delete tokens that expired before `before`; return their ids, sorted."""
        # Ids are read first: a parent's deletion cascades to its children (which expire no
        # later), and DELETE ... RETURNING would not report rows removed by the cascade.
        with self._db.transaction() as conn:
            rows = conn.execute(
                "SELECT id FROM derived_tokens WHERE expires < ? ORDER BY id", (before,)
            ).fetchall()
            conn.execute("DELETE FROM derived_tokens WHERE expires < ?", (before,))
        return [r["id"] for r in rows]

    def in_force(self, at: float) -> int:
        """How many tokens can still be used at `at`: not revoked, not expired, not used up (the
        same test as `DerivedToken.uses_left`, so `turret status` and `turret tokens` agree)."""
        rows = self._db.query(
            "SELECT count(*) FROM derived_tokens WHERE revoked_at IS NULL AND expires > ?"
            " AND (max_uses IS NULL OR uses < max_uses)",
            (at,),
        )
        return int(rows[0][0])
