"""Minting providers: a credential obtained just in time for one use, narrowed to its scope.

A `MintingProvider` implements `CredentialProvider` around the one method a subclass writes,
`mint(scope, deadline) -> Minted` (and, where the source allows it, `revoke_lease`):

- the request's scope is the service's `auth` scope with its `{param}` placeholders filled from
  the call's validated parameters (`turret.config.providers.fill`); each distinct resolved scope
  gets its own credential, cached until `refresh_before` seconds before it expires;
- single flight: concurrent requests for one resolved scope wait for one mint;
- a failed mint is retried with exponential backoff and full jitter, at most `max_retries`
  times and never past the request's deadline; then the request fails closed with 503
  `credential_unavailable` (nothing forwarded, no fallback) and a `credential_mint_failed`
  record at PRIORITY=2 (crit) naming the provider and scope, never a value;
- every issuance is recorded (`credential_minted`: provider, scope, expiry, the lease's
  fingerprint, with the request's id and agent) before it is used: a lost record means the
  credential is not used;
- every value handed out stays in `live_guard()` (exfiltration guard) and `response_guard`
  (echo guard) until it expires, also after a newer one replaced it in the cache;
- `revoke()` (the killswitch) revokes every outstanding lease at its source.

Clock, sleep and randomness are injected (`Hooks`), so tests control time without sleeping.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from turret.authkinds import Injection
from turret.config.providers import fill
from turret.echo import Redactor
from turret.errors import AuditUnavailable, CredentialUnavailable
from turret.model import JSON
from turret.providers import CredentialProvider, ProviderBase, Scope, fingerprint
from turret.providers.aged import unwrapped
from turret.providers.leases import (
    Hooks,
    Lease,
    Minted,
    MintedInjection,
    MintFailed,
    MintSettings,
    MintState,
    RevokeReport,
    scope_text,
)
from turret.records import CRIT, ERR, NOTICE, Event, Recorder, RequestAudit
from turret.tokens import rfc3339

if TYPE_CHECKING:
    from turret.connector import SessionPool

# The values live in `turret.providers.leases`; a provider type imports them from here.
__all__ = [
    "Hooks",
    "Lease",
    "MintFailed",
    "MintSettings",
    "MintState",
    "Minted",
    "MintedInjection",
    "MintingProvider",
    "RevokeReport",
    "Rotation",
    "failing",
    "minting",
    "revoke_all",
    "rotate",
    "scope_text",
]

log = logging.getLogger("turret")

FLIGHT_WAIT = 15.0  # seconds revocation waits for mints in flight (a request's deadline)
MAX_CACHED_SCOPES = 1024  # distinct scopes kept per service; expired ones go first


class MintingProvider(ProviderBase):
    """The framework around `mint`; a subclass sets `kind` and writes `mint`."""

    kind: ClassVar[str] = "minting"

    def __init__(
        self,
        service: str,
        provider: str,
        scope: Mapping[str, JSON],
        *,
        settings: MintSettings | None = None,
        hooks: Hooks | None = None,
        state: MintState | None = None,
    ) -> None:
        self.name = service
        self.provider = provider  # the config's name of the provider
        self.template = dict(scope)
        self.settings = settings or MintSettings()
        self.hooks = hooks or Hooks()
        self.state = state or MintState()
        self._built_at = time.time()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, {self.provider!r}, {self.state!r})"

    # --- what a subclass writes ------------------------------------------------------------

    async def mint(self, scope: Mapping[str, JSON], deadline: float) -> Minted:
        """Obtain a credential for `scope` before `deadline` (of `hooks.monotonic`); raise
        `MintFailed` saying why not."""
        raise NotImplementedError

    def check_scope(self, scope: Mapping[str, JSON]) -> None:
        """Refuse (a `RequestError`, the caller's mistake) a resolved scope the source would
        reject, before anything is asked of it: a parameter's value that cannot be a scope
        would otherwise fail every mint, retried, and raise the alarm. By default all pass."""

    async def revoke_lease(self, minted: Minted) -> None:
        """Invalidate `minted` at its source; raise `MintFailed` if that did not work. By
        default nothing: the credential lapses at its expiry."""

    def revocable(self, minted: Minted) -> bool:
        """Whether `revoke_lease` invalidates `minted` at its source (else it is only
        forgotten, and lapses at its expiry). By default not."""
        return False

    @property
    def identity(self) -> tuple[object, ...]:
        """What must be unchanged for a reload to keep this provider's credentials: its type,
        name and scope; a subclass adds its source and its credential's digest."""
        return (type(self), self.provider, scope_text(self.template))

    def carry_over(self, previous: MintingProvider) -> None:
        """Take over `previous`'s credentials (cache, leases, guard) if it is the same
        provider for the same scope; otherwise its leases stay its own (and lapse)."""
        if previous.identity == self.identity:
            self.state = previous.state

    # --- helpers for subclasses --------------------------------------------------------------

    @property
    def sessions(self) -> SessionPool:
        """The app's client sessions (each under one address policy), known from the first
        request on."""
        if self.state.pool is None:
            raise MintFailed("no client session yet")
        return self.state.pool

    def remaining(self, deadline: float) -> float:
        """Seconds left before `deadline`, at least a little so a timeout can be set."""
        return max(deadline - self.hooks.monotonic(), 0.001)

    # --- CredentialProvider ----------------------------------------------------------------

    @property
    def loaded_at(self) -> float:
        """When the last credential was minted; when the provider was built, before that."""
        return self.state.minted_at or self._built_at

    @property
    def fingerprint(self) -> str:
        """A short id of the newest credential (of the provider's name before the first)."""
        issued = self.state.issued
        return fingerprint(*issued[-1].minted.values()) if issued else fingerprint(self.provider)

    def guarded(self) -> list[str]:
        """Every value issued that may still be valid."""
        self._prune(self.hooks.wall())
        return [v for lease in self.state.issued for v in lease.minted.values()]

    def live_guard(self) -> Redactor | None:
        """The redactor of every value issued that may still be valid."""
        if self.hooks.wall() >= self.state.guard_until:
            self._prune(self.hooks.wall())
        return self.state.guard

    def response_guard(self, injection: Injection) -> Redactor | None:
        """The live guard (every issued value still valid, `injection`'s among them)."""
        lease = injection.lease if isinstance(injection, MintedInjection) else None
        if lease is None:
            return None
        guard = self.live_guard()
        return guard if guard is not None and lease in self.state.guard_leases else lease.guard

    async def injection(self, scope: Scope) -> Injection:
        """The credential for `scope`: cached if fresh, else minted (once for concurrent
        requests); `CredentialUnavailable` if it cannot be minted."""
        audit = scope.audit
        if scope.pool is None or audit is None:
            raise TypeError("a minting provider needs the request's sessions and audit (Scope)")
        self.state.pool = scope.pool
        resolved = fill(self.template, scope.params)
        if isinstance(resolved, dict):
            self.check_scope(resolved)
        key = scope_text(resolved)
        lease = self._fresh(key)
        if lease is None:
            lease = await self._flight(key, resolved, scope.timeout, audit)
        return _injection_of(lease)

    async def renew(self, scope: Scope, stale: Injection, status: int) -> Injection | None:
        """On 401 to a minted credential (revoked or expired early at its source), a new one."""
        if status != 401 or not isinstance(stale, MintedInjection) or stale.lease is None:
            return None
        key = stale.lease.scope
        if self.state.cache.get(key) is stale.lease:
            del self.state.cache[key]
        return await self.injection(scope)

    async def revoke(self) -> None:
        """Revoke every outstanding lease (the killswitch); see `revoke_outstanding`."""
        await self.revoke_outstanding()

    def outstanding(self) -> list[Lease]:
        """The leases issued that may still be valid and were not revoked."""
        self._prune(self.hooks.wall())
        return [lease for lease in self.state.issued if lease not in self.state.revoked]

    async def revoke_outstanding(self) -> RevokeReport:
        """Revoke every issued lease that may still be valid at its source, and empty the
        cache: the next request mints anew. Mints in flight are waited for (at most
        `FLIGHT_WAIT` seconds), so a credential issued just as the killswitch ran is revoked
        too. Failures are reported, not raised."""
        state = self.state
        if state.flights:
            await asyncio.wait(list(state.flights.values()), timeout=FLIGHT_WAIT)
        leases, state.cache = self.outstanding(), {}
        # All at once: a killswitch should not wait for one lease after another.
        results = await asyncio.gather(
            *(self.revoke_lease(lease.minted) for lease in leases), return_exceptions=True
        )
        for lease, result in zip(leases, results, strict=True):
            if isinstance(result, BaseException) and not isinstance(result, Exception):
                raise result  # a cancellation, not a failed revocation
            if result is None:
                state.revoked.add(lease)  # not revoked again by a second killswitch
        errors = [r for r in results if isinstance(r, Exception)]
        failures = [e.cause if isinstance(e, MintFailed) else type(e).__name__ for e in errors]
        return RevokeReport(len(results) - len(failures), tuple(failures))

    # --- the framework -----------------------------------------------------------------------

    def _fresh(self, key: str) -> Lease | None:
        lease = self.state.cache.get(key)
        if lease is None:
            return None
        if self.hooks.wall() < lease.minted.expires_at - self.settings.refresh_before:
            return lease
        return None

    async def _flight(self, key: str, resolved: JSON, budget: float, audit: RequestAudit) -> Lease:
        """The lease of the mint in flight for `key`, starting one if there is none."""
        flights = self.state.flights
        task = flights.get(key)
        if task is None:
            task = asyncio.ensure_future(self._mint_retrying(key, resolved, budget, audit))
            flights[key] = task
            task.add_done_callback(lambda done: _landed(flights, key, done))
        # Shielded: a request that goes away does not cancel the mint others wait for.
        return await asyncio.shield(task)

    async def _mint_retrying(
        self, key: str, resolved: JSON, budget: float, audit: RequestAudit
    ) -> Lease:
        hooks, settings = self.hooks, self.settings
        deadline = hooks.monotonic() + budget
        causes: list[str] = []
        for attempt in range(settings.max_retries + 1):
            if attempt:
                cap = min(settings.backoff_max, settings.backoff_first * 2 ** (attempt - 1))
                delay = hooks.random() * cap  # full jitter
                if hooks.monotonic() + delay >= deadline:
                    causes.append("request deadline reached")
                    break
                await hooks.sleep(delay)
            try:
                minted = await self._mint_once(resolved, deadline)
            except MintFailed as exc:
                causes.append(exc.cause)
                continue
            return await self._issued(key, minted, audit)
        attempts = len([c for c in causes if c != "request deadline reached"])
        raise self._failed(key, audit, attempts, causes[-1])

    async def _mint_once(self, resolved: JSON, deadline: float) -> Minted:
        if not isinstance(resolved, dict):
            raise MintFailed("scope is not a mapping")
        try:
            async with asyncio.timeout(self.remaining(deadline)):
                minted = await self.mint(resolved, deadline)
        except TimeoutError:
            raise MintFailed("timed out") from None
        values = minted.values()
        if not values or any(not v or any(c in v for c in "\r\n\0") for v in values):
            raise MintFailed("issued an empty or unusable value")
        if minted.expires_at <= self.hooks.wall():
            raise MintFailed("issued a credential that has already expired")
        return minted

    async def _issued(self, key: str, minted: Minted, audit: RequestAudit) -> Lease:
        """Record the issuance, then guard and cache it; a lost record: not used."""
        lease = Lease(minted, key)
        try:
            audit.event(
                Event.CREDENTIAL_MINTED,
                f"credential minted for service {self.name} by provider {self.provider}",
                {
                    "TURRET_PROVIDER": self.provider,
                    "TURRET_PROVIDER_TYPE": self.kind,
                    "TURRET_SERVICE": self.name,
                    "TURRET_SCOPE": key,
                    "TURRET_EXPIRES": rfc3339(minted.expires_at),
                    "TURRET_LEASE": fingerprint(*minted.values()),
                },
            )
        except AuditUnavailable:
            self._revoke_soon(minted)
            raise
        state = self.state
        state.failing, state.minted_at = None, time.time()
        state.issued.append(lease)
        await self._guard_includes(lease)
        # Cached only once guarded: every other request that gets it is covered.
        state.cache[key] = lease
        if len(state.cache) > MAX_CACHED_SCOPES:
            self._prune(self.hooks.wall())
            while len(state.cache) > MAX_CACHED_SCOPES:
                del state.cache[next(iter(state.cache))]  # the oldest insertion
        return lease

    async def _guard_includes(self, lease: Lease) -> None:
        """Rebuild the live guard until it includes `lease`. Built in a worker thread (a
        guard over many values takes milliseconds per value), so other requests go on; a guard
        built from an older set of leases than the current one is not installed."""
        state = self.state
        while lease in state.issued and lease not in state.guard_leases:
            snapshot = tuple(state.issued)
            values = [v for each in snapshot for v in each.minted.values()]
            guard = await asyncio.to_thread(Redactor, values)
            if set(state.guard_leases) <= set(snapshot):
                self._install_guard(guard, snapshot)

    def _failed(
        self, key: str, audit: RequestAudit, attempts: int, cause: str
    ) -> CredentialUnavailable:
        """Record the alert (PRIORITY=2) and build the 503 the request fails with."""
        self.state.failing = cause
        reason = f"credential mint failed: provider {self.provider}: {cause} ({attempts} attempts)"
        audit.event(
            Event.CREDENTIAL_MINT_FAILED,
            f"credential for service {self.name} could not be minted by provider "
            f"{self.provider}: {cause}",
            {
                "TURRET_PROVIDER": self.provider,
                "TURRET_PROVIDER_TYPE": self.kind,
                "TURRET_SERVICE": self.name,
                "TURRET_SCOPE": key,
                "TURRET_ATTEMPTS": attempts,
                "TURRET_REASON": reason,
            },
            priority=CRIT,
        )
        return CredentialUnavailable(
            f"service {self.name!r}: Turret could not obtain its credential; nothing was sent",
            reason=reason,
            provider=self.provider,
            service=self.name,
            cause=cause,
        )

    def _revoke_soon(self, minted: Minted) -> None:
        """Best effort, in the background: a credential whose issuance record was lost."""
        task = asyncio.ensure_future(self.revoke_lease(minted))
        task.add_done_callback(_logged)

    def _prune(self, now: float) -> None:
        state = self.state
        live = [lease for lease in state.issued if lease.minted.expires_at > now]
        if len(live) != len(state.issued):
            state.issued = live
            state.revoked &= set(live)
            state.cache = {k: v for k, v in state.cache.items() if v.minted.expires_at > now}
            self._rebuild_guard()

    def _rebuild_guard(self) -> None:
        leases = tuple(self.state.issued)
        values = [v for lease in leases for v in lease.minted.values()]
        self._install_guard(Redactor(values) if values else None, leases)

    def _install_guard(self, guard: Redactor | None, leases: tuple[Lease, ...]) -> None:
        state = self.state
        state.guard, state.guard_leases = guard, leases
        state.guard_until = min((lease.minted.expires_at for lease in leases), default=math.inf)


def _injection_of(lease: Lease) -> MintedInjection:
    injection = lease.minted.injection
    return MintedInjection(injection.headers, injection.query, sign=injection.sign, lease=lease)


def _landed(flights: dict[str, asyncio.Task[Lease]], key: str, done: asyncio.Task[Lease]) -> None:
    if flights.get(key) is done:
        del flights[key]
    _quiet(done)


def _quiet(done: asyncio.Future[Any]) -> None:
    """Mark a finished background task's exception as seen (it was raised to its waiters or
    is reported otherwise), so asyncio does not log it again."""
    if not done.cancelled():
        done.exception()


def _logged(done: asyncio.Future[Any]) -> None:
    """Log why a background revocation failed (it has no request to fail)."""
    failure = None if done.cancelled() else done.exception()
    if failure is not None:
        cause = failure.cause if isinstance(failure, MintFailed) else type(failure).__name__
        log.error("a credential whose issuance record was lost could not be revoked: %s", cause)


def _minting(providers: Iterable[CredentialProvider]) -> Iterator[MintingProvider]:
    """The minting ones of `providers`, looked at through key age's wrapper (the lease state is
    the inner provider's)."""
    return (p for p in map(unwrapped, providers) if isinstance(p, MintingProvider))


def failing(providers: Mapping[str, CredentialProvider]) -> list[str]:
    """The providers whose last mint failed (for STATUS=), by config name."""
    return sorted({p.provider for p in _minting(providers.values()) if p.state.failing})


async def revoke_all(
    providers: Mapping[str, CredentialProvider],
    recorder: Recorder,
    retired: Iterable[CredentialProvider] = (),
) -> int:
    """`revoke()` every provider (the killswitch), and those a reload `retired` that issued
    credentials still valid; record what minted leases were revoked and what could not be.
    Returns how many leases were revoked."""
    total = 0
    for each in [*providers.values(), *retired]:
        # Key age wraps every provider (`turret.providers.aged`); the lease is the inner one's.
        provider = unwrapped(each)
        if not isinstance(provider, MintingProvider):
            await provider.revoke()
            continue
        report = await provider.revoke_outstanding()
        total += report.revoked
        # The killswitch goes on whatever its records: the agents are already shut out.
        with contextlib.suppress(AuditUnavailable):
            _record_revocation(provider, report, recorder)
    return total


def _record_revocation(provider: MintingProvider, report: RevokeReport, recorder: Recorder) -> None:
    fields = {"TURRET_PROVIDER": provider.provider, "TURRET_SERVICE": provider.name}
    if report.revoked:
        recorder.record(
            Event.CREDENTIAL_REVOKED,
            f"{report.revoked} credentials of service {provider.name} revoked",
            {**fields, "TURRET_COUNT": report.revoked},
        )
    for cause in report.failures:
        recorder.record(
            Event.CREDENTIAL_REVOKE_FAILED,
            f"a credential of service {provider.name} could not be revoked: {cause}",
            {**fields, "TURRET_REASON": cause},
            priority=ERR,
        )


def minting(providers: Mapping[str, CredentialProvider], name: str) -> list[MintingProvider]:
    """The services' minting providers of config provider `name` (one per service using it)."""
    return [p for p in _minting(providers.values()) if p.provider == name]


async def rotate(
    providers: Mapping[str, CredentialProvider], name: str, recorder: Recorder, uid: int
) -> dict[str, Rotation]:
    """Rotate config provider `name` by itself (`turret rotate NAME`): for every service using
    it, revoke every credential it handed out that may still be valid, at its source, and empty
    its cache, so that the next use mints (or re-reads) a new one. Records what was revoked and
    what could not be, as the killswitch does, then `credential_rotated` with the operator's uid;
    a lost record raises `AuditUnavailable` (after the revocation: it only takes away).
    Returns each service's report (none when no service uses a minting provider `name`)."""
    reports: dict[str, Rotation] = {}
    for provider in minting(providers, name):
        old = provider.fingerprint
        # Those the source cannot invalidate are only forgotten; they lapse at their expiry.
        forgotten = sum(not provider.revocable(lease.minted) for lease in provider.outstanding())
        report = await provider.revoke_outstanding()
        rotation = reports[provider.name] = Rotation(
            max(0, report.revoked - forgotten), min(forgotten, report.revoked), report.failures
        )
        _record_revocation(provider, report, recorder)
        recorder.record(
            Event.CREDENTIAL_ROTATED,
            f"provider {name} rotated for service {provider.name} by uid {uid}: "
            f"{rotation.revoked} revoked, {rotation.forgotten} forgotten, the next use mints anew",
            {
                "TURRET_PROVIDER": name,
                "TURRET_SERVICE": provider.name,
                "TURRET_OLD_FINGERPRINT": old or "-",
                "TURRET_COUNT": rotation.revoked,
                "TURRET_FORGOTTEN": rotation.forgotten,
                "TURRET_OPERATOR_UID": uid,
            },
            priority=NOTICE if not report.failures else ERR,
        )
    return reports


@dataclass(frozen=True)
class Rotation:
    """What rotating one service's provider did: credentials revoked at the source, forgotten
    (the source cannot revoke them: they lapse at their expiry), and revocations that failed."""

    revoked: int
    forgotten: int
    failures: tuple[str, ...]
