"""Key age at run time: each loaded credential's fingerprint observed in the state store, its
use noted, its age warned about, and the documents `turret credentials` and `turret status` show.

`KeyAge.adopt(runtime)` runs at start and on every reload, before the runtime serves: it
observes each credential's keyed fingerprint (`FingerprintKey`; the value itself is never
stored or logged), records `credential_rotated` when one changed (with the uid of the operator
who announced the rotation through `turret rotate`, if one did), and wraps each service's
provider in an `AgedProvider` (use noted in memory, refused past an enforced `max_age`).
`warn()` writes `credential_rotate_soon` / `credential_overdue` at start, on reload and, from
`tick()`, once a day. Without a state store ages are unknown: nothing is observed, and a config
that enforces a `max_age` is refused (its age could never be known).
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Callable
from dataclasses import replace

from turret.credmodel import CredentialPolicy
from turret.errors import AuditUnavailable, NotFound, StateError
from turret.keyage import ATTENTION, Assessment, KeyState, assess, enforced_deadline, warning_due
from turret.model import Config
from turret.providers.aged import AgedProvider, unwrapped
from turret.records import ERR, NOTICE, WARNING, Event, Recorder
from turret.runtime import Runtime
from turret.state import CredentialAge, StateStore, short
from turret.tokens import rfc3339

log = logging.getLogger("turret")
FLUSH_INTERVAL = 60.0  # seconds between writes of the batched last-used times
ROTATING = "rotating:"  # meta key prefix: the uid that announced a rotation (`turret rotate`)
# An announcement names the operator of a rotation seen within this time; an older one was
# abandoned, and a later rotation by someone else must not be put down to them.
ANNOUNCEMENT_TTL = 86400.0
NO_STORE_ENFORCE = (
    "enforce_max_age needs a state directory (StateDirectory=turret, or --state-dir): without "
    "one a credential's age is unknown"
)


def service_credentials(config: Config) -> dict[str, list[str]]:
    """Each credential a service sends, with the services sending it."""
    out: dict[str, list[str]] = {}
    for service_name, service in sorted(config.services.items()):
        for name in service.auth.uses():
            out.setdefault(name, []).append(service_name)
    return out


def other_uses(config: Config, name: str) -> list[str]:
    """What else uses credential `name`: agents' tokens, the audit key."""
    uses = [f"agent {a.name} token" for a in config.agents.values() if a.token_credential == name]
    return uses + (["audit.params_key"] if config.params_key == name else [])


def assess_one(config: Config, name: str, age: CredentialAge | None, now: float) -> Assessment:
    """The state of credential `name` at `now`, from what the store knows of it."""
    policy = config.credential_policy.get(name, CredentialPolicy())
    if age is None:
        return assess(policy, None, None, now)
    return assess(
        policy, age.last_changed, age.last_used, now,
        first_seen=age.first_seen, tracks_use=name in service_credentials(config),
    )  # fmt: skip


class KeyAge:
    """The server's key-age tracker: one per process, kept across reloads."""

    def __init__(
        self, state: StateStore | None, auditor: Recorder, wall: Callable[[], float] = time.time
    ) -> None:
        self.state = state
        self.auditor = auditor
        self.wall = wall
        self.config: Config | None = None
        self.ages: dict[str, CredentialAge] = {}
        self.last_warned: float | None = None
        self.last_flush = wall()

    def adopt(self, runtime: Runtime) -> Runtime:
        """Observe `runtime`'s credentials and wrap its providers; the runtime to serve."""
        config = runtime.config
        if self.state is None:
            if any(p.enforce_max_age for p in config.credential_policy.values()):
                raise StateError(NO_STORE_ENFORCE)
            self.config = config
            return runtime
        self.state.flush()  # last-used times noted under the runtime being replaced
        now = self.wall()
        key = self.state.fingerprint_key
        ages = {}
        for name, secret in sorted(runtime.secrets.items()):
            seen = self.state.credentials.observe(
                name, key.fingerprint(secret.reveal().encode()), now
            )
            ages[name] = seen.age
            if seen.changed:
                self._rotated(seen.age, now)
        self.config, self.ages = config, ages
        return replace(runtime, providers=self._wrapped(runtime))

    def _wrapped(self, runtime: Runtime) -> dict[str, AgedProvider]:
        assert self.state is not None  # noqa: S101 - adopt() returned early without a store
        config = runtime.config
        out = {}
        for service_name, provider in runtime.providers.items():
            names = sorted(config.services[service_name].auth.uses())
            deadlines = [
                d
                for n in names
                if (age := self.ages.get(n)) is not None
                and (d := enforced_deadline(config.credential_policy[n], age.last_changed))
                is not None
            ]
            out[service_name] = AgedProvider(
                unwrapped(provider),
                names,
                min(deadlines, default=None),
                self.state.credentials.touch_used,
                self.wall,
            )
        return out

    def _rotated(self, age: CredentialAge, now: float) -> None:
        assert self.state is not None  # noqa: S101 - only observed with a store
        uid = announced_by(self.state.meta.get(ROTATING + age.name), now)
        self.state.meta.delete(ROTATING + age.name)
        old = short(age.previous_fingerprint) if age.previous_fingerprint else "-"
        self.auditor.record(
            Event.CREDENTIAL_ROTATED,
            f"credential {age.name} rotated: {old} -> {short(age.fingerprint)}",
            {
                "TURRET_CREDENTIAL": age.name,
                "TURRET_OLD_FINGERPRINT": old,
                "TURRET_NEW_FINGERPRINT": short(age.fingerprint),
                "TURRET_OPERATOR_UID": uid,
            },
            priority=NOTICE,
        )

    def assessments(self, now: float) -> dict[str, Assessment]:
        """Every configured credential's state at `now`."""
        config = self.config
        if config is None:
            return {}
        return {
            name: assess_one(config, name, self.ages.get(name) if self.state else None, now)
            for name in sorted(config.credential_policy)
        }

    def overdue(self, now: float) -> int:
        """How many credentials are past their max_age (for STATUS=)."""
        return sum(a.state is KeyState.OVERDUE for a in self.assessments(now).values())

    def warn(self) -> None:
        """A record for each credential that is overdue or due for rotation soon."""
        now = self.wall()
        self.last_warned = now
        for name, a in self.assessments(now).items():
            if a.state not in (KeyState.OVERDUE, KeyState.ROTATE_SOON) or a.due is None:
                continue
            overdue = a.state is KeyState.OVERDUE
            self.auditor.record(
                Event.CREDENTIAL_OVERDUE if overdue else Event.CREDENTIAL_ROTATE_SOON,
                f"credential {name} {'was due' if overdue else 'is due'} for rotation at "
                f"{rfc3339(a.due)} (age {int((a.age or 0) // 86400)}d)",
                {
                    "TURRET_CREDENTIAL": name,
                    "TURRET_DUE": rfc3339(a.due),
                    "TURRET_AGE_SECONDS": int(a.age or 0),
                },
                priority=ERR if overdue else WARNING,
            )

    async def tick(self) -> None:
        """From the heartbeat loop: the daily warnings, and the batched last-used times."""
        now = self.wall()
        try:
            # The first warnings are the start's (`warn()`); the heartbeat only repeats them.
            if self.last_warned is not None and warning_due(self.last_warned, now):
                self.warn()
            if self.state is not None and now - self.last_flush >= FLUSH_INTERVAL:
                self.last_flush = now
                await asyncio.to_thread(self.state.flush)
        except (AuditUnavailable, sqlite3.Error):
            # The heartbeat loop must go on (it feeds the watchdog); tomorrow's warning or the
            # next flush tries again.
            log.exception("key age: daily warning or last-used flush failed")


def credentials_doc(
    runtime: Runtime, state: StateStore | None, now: float
) -> list[dict[str, object]]:
    """The document of `turret credentials`: every credential the running config uses (queries
    only; flush the store first for current last-used times).

    A fingerprint is the 8 hex digits of the keyed HMAC of the value `runtime` serves, never
    anything computed from the value alone: during a reload the store may already hold the new
    value's while requests are still served with the old one, and `turret rotate --wait` must
    not report the new value loaded before it is in use."""
    config = runtime.config
    ages = {a.name: a for a in state.credentials.all()} if state is not None else {}
    key = state.fingerprint_key if state is not None else None
    serving = {
        name: short(key.fingerprint(secret.reveal().encode()))
        for name, secret in runtime.secrets.items()
        if key is not None
    }
    users = service_credentials(config)
    docs: list[dict[str, object]] = []
    for name, policy in sorted(config.credential_policy.items()):
        age = ages.get(name)
        a = assess_one(config, name, age, now)
        docs.append(
            {
                "name": name,
                "fingerprint": serving.get(name),
                "first_seen": age.first_seen if age else None,
                "last_changed": age.last_changed if age else None,
                "age_seconds": None if a.age is None else round(a.age),
                "max_age_seconds": policy.max_age,
                "warn_before_seconds": policy.warn_before,
                "due": a.due,
                "last_used": age.last_used if age else None,
                "services": users.get(name, []),
                "other_uses": other_uses(config, name),
                "owner": policy.owner,
                "rotate_hint": policy.rotate_hint,
                "enforce_max_age": policy.enforce_max_age,
                "state": str(a.state),
            }
        )
    return docs


def attention(config: Config, state: StateStore | None, now: float) -> list[dict[str, str]]:
    """The credentials needing attention (rotate-soon, overdue, unused), for `turret status`."""
    if state is None:
        return []
    ages = {a.name: a for a in state.credentials.all()}
    states = {n: assess_one(config, n, ages.get(n), now).state for n in config.credential_policy}
    return [{"name": n, "state": str(s)} for n, s in sorted(states.items()) if s in ATTENTION]


def announce(state: StateStore, config: Config, name: str, uid: int, at: float) -> None:
    """Note that operator `uid` is rotating `name` (`turret rotate --wait`): the
    `credential_rotated` record the next start or reload writes for it names them."""
    if name not in config.credential_policy:
        raise NotFound(f"no credential {name!r} is used by the configuration")
    state.meta.set(ROTATING + name, f"{uid}@{at}", at)


def announced_by(value: str | None, now: float) -> str | None:
    """The uid of a rotation announcement (`uid@time`) still in force at `now`, else None."""
    uid, _, at = (value or "").partition("@")
    try:
        fresh = 0 <= now - float(at) <= ANNOUNCEMENT_TTL
    except ValueError:
        return None
    return uid if fresh and uid.isdigit() else None


def unwrap(runtime: Runtime) -> Runtime:
    """`runtime` with its providers as built (a reload hands their state on)."""
    return replace(runtime, providers={n: unwrapped(p) for n, p in runtime.providers.items()})
