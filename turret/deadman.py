"""The dead-man switch at work: probing the heartbeat URL, reading the last check-in, acting.

`DeadMan.tick()` is one round: probe the heartbeat URL when its interval has passed (a GET
through the address policy, with the upstreams' own connection guard, redirects not followed,
2xx expected), look at the last `turret checkin`, and act on what `turret.heartbeat.Watch`
decides: seal Turret (through the store, as the killswitch does) or revoke every derived token;
then `heartbeat_failed` (PRIORITY=crit) says why. `running()` runs rounds on a timer for the
server; tests call `tick()` with their own clock. The last check-in and the watches that fired
are kept in the store, so neither a restart nor a reload forgets them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Callable

import aiohttp
from aiohttp.resolver import DefaultResolver
from yarl import URL

from turret.connector import ResolverFactory, SessionPool
from turret.errors import AddressRefused, AuditUnavailable, StartupError
from turret.heartbeat import (
    CHECKIN,
    HEARTBEAT,
    SEAL,
    Firing,
    HeartbeatSettings,
    Watch,
    next_check,
)
from turret.records import CRIT, NOTICE, Event, Recorder
from turret.runtime import RuntimeHolder
from turret.state import StateStore

log = logging.getLogger("turret")
CHECKIN_KEY = "checkin"  # meta: {"at": seconds, "by": "uid:N" or "start"}
FIRED_KEY = "deadman_fired"  # meta: the watches that fired and have not recovered
NEEDS_STORE = (
    "heartbeat: and checkin: need a state directory (StateDirectory=turret, or --state-dir): "
    "the switch seals or revokes through the state store"
)


def record_checkin(state: StateStore, by: str, at: float) -> None:
    """Keep the time of a check-in (and who made it) in the store."""
    state.meta.set(CHECKIN_KEY, json.dumps({"at": at, "by": by}), at)


def last_checkin(state: StateStore) -> tuple[float, str] | None:
    """The last check-in's time and who made it, or None."""
    raw = state.meta.get(CHECKIN_KEY)
    if raw is None:
        return None
    doc = json.loads(raw)
    return float(doc["at"]), str(doc["by"])


async def probe(pool: SessionPool, settings: HeartbeatSettings) -> str | None:
    """GET the heartbeat URL: None for a 2xx answer within the timeout, else what went wrong (a
    fixed text: never the URL, which may hold a check's secret id)."""
    timeout = aiohttp.ClientTimeout(total=settings.timeout)
    try:
        session = pool.session_for(settings.address_policy)
        async with session.get(
            URL(settings.url, encoded=True), allow_redirects=False, timeout=timeout
        ) as resp:
            status = resp.status
    except TimeoutError:
        return "timeout"
    except aiohttp.ClientConnectorError as exc:
        if isinstance(exc.os_error, AddressRefused):
            return "address refused by heartbeat.allow_networks"
        return "connection failed"
    except (aiohttp.ClientError, OSError) as exc:
        return f"invalid answer ({type(exc).__name__})"
    except Exception as exc:  # any other failure is a miss too, never a pass
        log.exception("heartbeat probe failed")
        return f"probe failed ({type(exc).__name__})"
    return None if 200 <= status < 300 else f"HTTP {status}"


class DeadMan:
    """The switch over the current config's `heartbeat:` and `checkin:`."""

    def __init__(
        self,
        holder: RuntimeHolder,
        state: StateStore | None,
        auditor: Recorder,
        pool: SessionPool,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.holder = holder
        self.state = state
        self.auditor = auditor
        self.pool = pool
        self.wall = wall
        self.status = ""  # why it fired, for STATUS= and `turret status`
        fired = json.loads(state.meta.get(FIRED_KEY) or "[]") if state is not None else []
        self.watch = Watch(fired=set(fired))
        self._next_probe = 0.0

    async def tick(self) -> list[Firing]:
        """One round: probe if due, check the check-in, act on what fired."""
        config = self.holder.current.config
        now = self.wall()
        fired_before = set(self.watch.fired)
        # A watch taken out of the config forgets that it fired: put back, it acts again.
        if config.heartbeat is None:
            self.watch.fired.discard(HEARTBEAT)
            self.watch.misses = 0
        if config.checkin is None:
            self.watch.fired.discard(CHECKIN)
        firings: list[Firing | None] = []
        if config.heartbeat is not None and now >= self._next_probe:
            self._next_probe = now + config.heartbeat.interval
            failure = await probe(self.pool, config.heartbeat)
            firings.append(self.watch.probed(config.heartbeat, failure))
            if failure is None and HEARTBEAT in fired_before:
                self._recovered()
        if config.checkin is not None and self.state is not None:
            # The store's writes fsync: off the loop, as the admin app does them.
            last = await asyncio.to_thread(self._last_checkin, self.state, now)
            firings.append(self.watch.checked(config.checkin, last, now))
        acted = [f for f in firings if f is not None]
        for firing in acted:
            await self._fire(firing, now)
        if self.watch.fired != fired_before and self.state is not None:
            fired = json.dumps(sorted(self.watch.fired))
            await asyncio.to_thread(self.state.meta.set, FIRED_KEY, fired, now)
        if not self.watch.fired:
            self.status = ""
        return acted

    @staticmethod
    def _last_checkin(state: StateStore, now: float) -> float:
        """The last check-in; with none yet, the clock starts now (and is kept, so restarts
        do not keep resetting it)."""
        last = last_checkin(state)
        if last is None:
            record_checkin(state, "start", now)
            return now
        return last[0]

    async def _fire(self, firing: Firing, now: float) -> None:
        """Act first (the protective step does not wait on the audit trail), then record."""
        self.status = f"dead-man switch fired: {firing.why}; {firing.action}"
        log.critical("%s", self.status)
        state = self.state
        if state is None:
            return
        revoked: list[str] = []
        if firing.action == SEAL:
            await asyncio.to_thread(state.controls.seal, firing.why, firing.watch, now)
        else:
            revoked = await asyncio.to_thread(state.tokens.revoke_all, firing.watch, now)
        try:
            self.auditor.record(
                Event.HEARTBEAT_FAILED,
                f"dead-man switch: {firing.why}; {firing.action}",
                {
                    "TURRET_WATCH": firing.watch,
                    "TURRET_ACTION": firing.action,
                    "TURRET_REASON": firing.why,
                    "TURRET_TOKENS_REVOKED": len(revoked),
                },
                priority=CRIT,
            )
            for token_id in revoked:
                self.auditor.record(
                    Event.TOKEN_REVOKED,
                    f"token {token_id} revoked: dead-man switch ({firing.watch})",
                    {"TURRET_TOKEN_ID": token_id, "TURRET_REVOKED_BY": firing.watch},
                    priority=NOTICE,
                )
        except AuditUnavailable:
            log.exception("dead-man switch acted (%s); its audit record was lost", firing.action)

    def _recovered(self) -> None:
        with contextlib.suppress(AuditUnavailable):
            self.auditor.record(
                Event.HEARTBEAT_RECOVERED,
                "heartbeat answers again (a seal stays until `turret unseal`)",
                {"TURRET_WATCH": HEARTBEAT},
                priority=NOTICE,
            )


@contextlib.asynccontextmanager
async def running(
    holder: RuntimeHolder,
    state: StateStore | None,
    auditor: Recorder,
    resolver: ResolverFactory = DefaultResolver,
) -> AsyncIterator[DeadMan]:
    """The switch, running rounds in a task for as long as the block runs."""
    config = holder.current.config
    if state is None and (config.heartbeat is not None or config.checkin is not None):
        raise StartupError(NEEDS_STORE)
    pool = SessionPool(resolver())
    switch = DeadMan(holder, state, auditor, pool)

    async def rounds() -> None:
        while True:
            try:
                await switch.tick()
            except Exception:  # a broken round must not end the switch: log it, go on
                log.exception("dead-man switch round failed")
            current = holder.current.config
            await asyncio.sleep(next_check(current.heartbeat, current.checkin))

    task = asyncio.create_task(rounds())
    try:
        yield switch
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await pool.close()
