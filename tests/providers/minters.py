"""What the minting tests share: a controlled clock, a recording `RequestAudit`, and a minting
provider whose source is an in-process counter (the framework is what is under test)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field

from aiohttp.resolver import ThreadedResolver

from tests.pipeline.conftest import Recording
from turret.authkinds import Injection
from turret.connector import SessionPool
from turret.echo import Redactor
from turret.exfil import TokenGuard
from turret.model import JSON
from turret.providers import Scope
from turret.providers.minting import Hooks, Minted, MintFailed, MintingProvider, MintSettings
from turret.records import INFO, Event, Fields, RequestAudit
from turret.scrub import Scrubber


@dataclass
class FakeTime:
    """Wall and monotonic clocks that move only when the test (or a backoff sleep) moves them."""

    wall: float = 1_800_000_000.0
    mono: float = 100.0
    slept: list[float] = field(default_factory=list)
    rolls: list[float] = field(default_factory=list)  # what `random` returns, in turn

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.advance(seconds)

    def advance(self, seconds: float) -> None:
        self.wall += seconds
        self.mono += seconds

    def random(self) -> float:
        return self.rolls.pop(0) if self.rolls else 1.0

    def hooks(self) -> Hooks:
        return Hooks(lambda: self.wall, lambda: self.mono, self.sleep, self.random)


@dataclass
class Priorities(Recording):
    """A `Recording` that also keeps each record's priority."""

    priorities: list[tuple[Event, int]] = field(default_factory=list)

    def record(self, event: Event, message: str, fields: Fields, priority: int = INFO) -> None:
        super().record(event, message, fields, priority)
        self.priorities.append((event, priority))


def request_audit(recording: Recording, request_id: str = "req-1") -> RequestAudit:
    """A request's audit records, as the pipeline opens them, into `recording`."""
    fields: dict[str, str | int | float | None] = {
        "TURRET_REQUEST_ID": request_id,
        "TURRET_AGENT": "bot",
    }
    return RequestAudit(recording, fields, Scrubber(Redactor([]), TokenGuard(), b""))


class CountingMinter(MintingProvider):
    """Mints `tok-<n>` valid for `lifetime` seconds; fails while `failures` says so; holds
    each mint at `gate` when one is set."""

    kind = "counting"

    def __init__(self, time: FakeTime, scope: Mapping[str, JSON] | None = None) -> None:
        super().__init__("svc", "counter", scope or {}, settings=MintSettings(), hooks=time.hooks())
        self.time = time
        self.mints: list[Mapping[str, JSON]] = []
        self.revoked: list[str] = []
        self.failures = 0  # how many mints fail before one works (-1: all)
        self.lifetime = 3600.0
        self.gate: asyncio.Event | None = None
        self.answer: Minted | None = None  # a fixed (bad) answer instead of a fresh token
        self.started = asyncio.Event()  # set when a mint begins
        self.revoked_one = asyncio.Event()

    async def mint(self, scope: Mapping[str, JSON], deadline: float) -> Minted:
        self.mints.append(scope)
        self.started.set()
        if self.gate is not None:
            await self.gate.wait()
        if self.failures:
            self.failures -= 1 if self.failures > 0 else 0
            raise MintFailed("source refused (HTTP 500)")
        if self.answer is not None:
            return self.answer
        token = f"tok-{len(self.mints)}-secretvalue"
        headers = {"Authorization": f"Bearer {token}"}
        return Minted(Injection(headers), self.time.wall + self.lifetime, secrets=(token,))

    async def revoke_lease(self, minted: Minted) -> None:
        self.revoked.append(minted.secrets[0])
        self.revoked_one.set()


def scope_for(pool: SessionPool, audit: RequestAudit, **params: str) -> Scope:
    return Scope("svc", "svc.act" if params else None, params, pool=pool, audit=audit)


def new_pool() -> SessionPool:
    return SessionPool(ThreadedResolver())
