"""The values of minting (`turret.providers.minting`): what a source issued (`Minted`), how
the provider keeps it (`Lease`, `MintState`), its settings and injected clocks (`Hooks`).

Pure data and a few small helpers; no I/O.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING

from turret.authkinds import Injection
from turret.echo import Redactor
from turret.model import JSON

if TYPE_CHECKING:
    from turret.connector import SessionPool


class MintFailed(Exception):
    """One mint that did not work; `cause` is a fixed phrase (never a value, never the
    source's answer quoted: it may reflect what Turret sent)."""

    def __init__(self, cause: str) -> None:
        super().__init__(cause)
        self.cause = cause


@dataclass(frozen=True)
class MintSettings:
    """How long a minted credential is used, and how a failed mint is retried."""

    refresh_before: float = 300.0  # seconds before its expiry a credential is minted anew
    backoff_first: float = 0.5  # the cap of the first retry's delay; doubled per retry
    backoff_max: float = 8.0
    max_retries: int = 3


@dataclass(frozen=True)
class Hooks:
    """The clocks, sleep and randomness of a provider: injected so tests control them."""

    wall: Callable[[], float] = time.time  # expiry times are wall-clock (what sources return)
    monotonic: Callable[[], float] = time.monotonic  # deadlines
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    random: Callable[[], float] = random.random  # jitter, not a secret


@dataclass(frozen=True, repr=False)
class Minted:
    """What a source issued: the injection to send, when it expires (seconds since the epoch),
    the lease id the source revokes it by (if any, not secret), and secret values beyond the
    injection's own (the raw token inside a header) for the guards."""

    injection: Injection
    expires_at: float
    lease_id: str | None = None
    secrets: tuple[str, ...] = ()

    def __repr__(self) -> str:
        return f"Minted(expires_at={self.expires_at!r}, lease_id={self.lease_id!r})"

    def values(self) -> list[str]:
        """Every secret value of this credential."""
        return [*self.injection.values(), *self.secrets]


@dataclass(frozen=True, repr=False, eq=False)  # each issuance is itself: compared by identity
class Lease:
    """One issued credential as the provider keeps it: the minted value and its resolved scope
    (as recorded)."""

    minted: Minted
    scope: str

    def __repr__(self) -> str:
        return f"Lease(scope={self.scope!r}, {self.minted!r})"

    @cached_property
    def guard(self) -> Redactor:
        """A redactor of this credential alone (built when first needed)."""
        return Redactor(self.minted.values())


@dataclass(frozen=True, repr=False)  # Injection's repr, which hides the values
class MintedInjection(Injection):
    """A minted credential's injection, with the lease it came from."""

    lease: Lease | None = field(default=None, compare=False)


@dataclass
class MintState:
    """One service's minted credentials: the cache, the mints in flight, everything issued
    that may still be valid. Held only in memory; handed to the next runtime on reload."""

    cache: dict[str, Lease] = field(default_factory=dict)
    flights: dict[str, asyncio.Task[Lease]] = field(default_factory=dict)
    issued: list[Lease] = field(default_factory=list)
    revoked: set[Lease] = field(default_factory=set)  # revoked at the source (still guarded)
    guard: Redactor | None = None
    guard_leases: tuple[Lease, ...] = ()  # the leases `guard` was built from
    guard_until: float = math.inf  # the first expiry among `issued`: the guard is rebuilt then
    failing: str | None = None  # why the last mint failed, until one works again
    pool: SessionPool | None = None  # the app's sessions, from the first request
    minted_at: float | None = None

    def __repr__(self) -> str:
        return f"MintState(cached={len(self.cache)}, issued={len(self.issued)})"


@dataclass(frozen=True)
class RevokeReport:
    """What `revoke()` did: how many leases were revoked, and why others could not be."""

    revoked: int = 0
    failures: tuple[str, ...] = ()


def scope_text(resolved: JSON) -> str:
    """A resolved scope as one canonical JSON text: the cache key, and what records show."""
    return json.dumps(resolved, sort_keys=True, separators=(",", ":"))
