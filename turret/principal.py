"""Who is asking: the principal a request is decided for, and what narrows it.

Authentication turns a token into a `Principal`; the policy decides on it. A principal is a
configured agent (whose grants apply) plus where the token came from and what narrows it: a
derived token adds the scope it was minted with. Each `Restriction` can only take away: the
policy asks every one of them after the agent's own rules allowed, and any refusal is a deny.
The caller's `Peer` comes with it; a bound agent's token from any other peer never becomes a
principal at all (`turret.pipeline.binding`).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol

from turret.containment import ProcessFacts
from turret.model import Action, Agent


class Source(enum.Enum):
    """Where the presented token came from."""

    CONFIG = "config"  # the agent's own token, from the configuration
    DERIVED = "derived"  # a token minted from another (a lease)


@dataclass(frozen=True)
class Peer:
    """The process at the other end of a unix-socket connection (SO_PEERCRED)."""

    pid: int | None
    uid: int | None
    gid: int | None
    unit: str | None = None  # the peer's systemd unit, where it could be resolved
    user_unit: str | None = None  # its unit in its user manager (user@UID.service), if any
    sandbox: ProcessFacts | None = None  # what the kernel shows of its confinement


class Restriction(Protocol):
    """A narrowing of what a principal may do; `refusal` names why an action is outside it."""

    def refusal(self, action: Action) -> str | None:
        """None if `action` is within this restriction, else the reason it is not."""


@dataclass(frozen=True)
class Principal:
    """An authenticated caller: the agent whose grants apply, and what narrows them."""

    agent: Agent
    source: Source = Source.CONFIG
    token_id: str | None = None  # a derived token's id; None for the agent's own token
    restrictions: tuple[Restriction, ...] = ()
    peer: Peer | None = None

    @property
    def name(self) -> str:
        """The agent's name: what the audit trail and the limits are keyed by."""
        return self.agent.name
