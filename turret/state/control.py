"""Operator controls and small records: the seal, agent revocations, the audit chain head, meta.

`by` names who acted, as text the audit record can carry: `uid:0` for an operator on the admin
socket (see `by_uid`), or a component of Turret (`heartbeat`, `killswitch`).
"""

from __future__ import annotations

from dataclasses import dataclass

from turret.state.db import Database


def by_uid(uid: int) -> str:
    """How an operator's uid is recorded in `by`."""
    return f"uid:{uid}"


@dataclass(frozen=True)
class Seal:
    """Turret is sealed: every agent request is refused until an operator unseals."""

    reason: str
    by: str
    at: float


@dataclass(frozen=True)
class Revocation:
    """A configured agent is revoked."""

    agent: str
    reason: str
    by: str
    at: float


@dataclass(frozen=True)
class ChainHead:
    """The last audit record written: its sequence number and chain value (hex)."""

    seq: int
    chain: str


class Controls:
    """The seal and the agent revocations."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def seal(self, reason: str, by: str, at: float) -> Seal:
        """Seal Turret and return the seal in force; sealing again keeps the first seal (its
        time says since when Turret has been sealed)."""
        with self._db.transaction() as conn:
            conn.execute(
                "INSERT INTO seal (id, reason, by, at) VALUES (1, ?, ?, ?) ON CONFLICT DO NOTHING",
                (reason, by, at),
            )
            row = conn.execute("SELECT reason, by, at FROM seal").fetchone()
        return Seal(row["reason"], row["by"], row["at"])

    def unseal(self) -> Seal | None:
        """Lift the seal; return the seal that was lifted, if Turret was sealed."""
        rows = self._db.execute("DELETE FROM seal RETURNING reason, by, at")
        return Seal(rows[0]["reason"], rows[0]["by"], rows[0]["at"]) if rows else None

    def sealed(self) -> Seal | None:
        """The seal in force, or None."""
        rows = self._db.query("SELECT reason, by, at FROM seal")
        return Seal(rows[0]["reason"], rows[0]["by"], rows[0]["at"]) if rows else None

    def revoke_agent(self, agent: str, reason: str, by: str, at: float) -> Revocation:
        """Revoke a configured agent; revoking again keeps the first revocation."""
        with self._db.transaction() as conn:
            conn.execute(
                "INSERT INTO agent_revocations (agent, reason, by, at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT DO NOTHING",
                (agent, reason, by, at),
            )
            r = conn.execute(
                "SELECT reason, by, at FROM agent_revocations WHERE agent = ?", (agent,)
            ).fetchone()
        return Revocation(agent, r["reason"], r["by"], r["at"])

    def unrevoke_agent(self, agent: str) -> bool:
        """Lift an agent's revocation; False when it was not revoked."""
        return bool(
            self._db.execute("DELETE FROM agent_revocations WHERE agent = ? RETURNING agent",
                             (agent,))
        )

    def revoked_agents(self) -> dict[str, Revocation]:
        """Every revoked agent by name."""
        rows = self._db.query("SELECT agent, reason, by, at FROM agent_revocations")
        return {r["agent"]: Revocation(r["agent"], r["reason"], r["by"], r["at"]) for r in rows}


class AuditChain:
    """The head of the tamper-evident audit chain, continued across restarts."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def head(self) -> ChainHead | None:
        """The last recorded (seq, chain), or None before the first record."""
        rows = self._db.query("SELECT seq, chain FROM audit_chain")
        return ChainHead(rows[0]["seq"], rows[0]["chain"]) if rows else None

    def advance(self, seq: int, chain: str, at: float) -> None:
        """Record a new head; durable (fsynced) when this returns.

        Refuses (ValueError) a `seq` that does not move forward, so two writers or a replayed
        call cannot rewind the chain.
        """
        rows = self._db.execute(
            "INSERT INTO audit_chain (id, seq, chain, at) VALUES (1, ?, ?, ?)"
            " ON CONFLICT (id) DO UPDATE SET seq = excluded.seq, chain = excluded.chain,"
            " at = excluded.at WHERE excluded.seq > audit_chain.seq RETURNING seq",
            (seq, chain, at),
        )
        if not rows:
            raise ValueError(f"audit chain seq {seq} does not advance the recorded head")


class Meta:
    """Small named text values (last check-in time, heartbeat state)."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def get(self, key: str) -> str | None:
        """The value under `key`, or None."""
        rows = self._db.query("SELECT value FROM meta WHERE key = ?", (key,))
        return str(rows[0]["value"]) if rows else None

    def set(self, key: str, value: str, at: float) -> None:
        """Set `key` to `value`."""
        self._db.execute(
            "INSERT INTO meta (key, value, updated) VALUES (?, ?, ?)"
            " ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated = excluded.updated",
            (key, value, at),
        )

    def delete(self, key: str) -> bool:
        """Remove `key`; False when it was not set."""
        return bool(self._db.execute("DELETE FROM meta WHERE key = ? RETURNING key", (key,)))
