"""Pure key-age evaluation: what state a credential is in at a given time, from its policy and
what the state store knows of it (when its value last changed, when it was last used).

    ok           younger than `max_age - warn_before` (or no `max_age`), and in use
    rotate-soon  within `warn_before` of its `max_age`
    overdue      older than its `max_age`
    unused       a service's credential no request has used for `UNUSED_AFTER` (and known that
                 long): probably safe to revoke at its source
    unknown      no state store, so no age

Overdue and rotate-soon come before unused: an old credential is worth rotating even if idle.
No clock is read here: the caller passes `now`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from turret.credmodel import DAY, CredentialPolicy

UNUSED_AFTER = 30 * DAY


class KeyState(enum.StrEnum):
    """A credential's state, as `turret credentials` prints it."""

    OK = "ok"
    ROTATE_SOON = "rotate-soon"
    OVERDUE = "overdue"
    UNUSED = "unused"
    UNKNOWN = "unknown"


ATTENTION = frozenset({KeyState.ROTATE_SOON, KeyState.OVERDUE, KeyState.UNUSED})


@dataclass(frozen=True)
class Assessment:
    """One credential's state at `now`, with its age and when it is (or was) due."""

    state: KeyState
    age: float | None  # seconds since its value last changed
    due: float | None  # when it reaches max_age (epoch seconds), None without one


def assess(
    policy: CredentialPolicy,
    last_changed: float | None,
    last_used: float | None,
    now: float,
    *,
    first_seen: float | None = None,
    tracks_use: bool = True,
) -> Assessment:
    """The state of a credential whose value last changed at `last_changed` (None: unknown).

    `tracks_use` is False for credentials no service sends (agent tokens, the audit key): their
    use is not recorded, so they are never "unused"."""
    if last_changed is None:
        return Assessment(KeyState.UNKNOWN, None, None)
    age = max(0.0, now - last_changed)
    due = None if policy.max_age is None else last_changed + policy.max_age
    if due is not None and now >= due:
        return Assessment(KeyState.OVERDUE, age, due)
    if due is not None and now >= due - policy.warn_before:
        return Assessment(KeyState.ROTATE_SOON, age, due)
    known_since = last_changed if first_seen is None else first_seen
    idle_since = known_since if last_used is None else last_used
    if tracks_use and now - idle_since >= UNUSED_AFTER:
        return Assessment(KeyState.UNUSED, age, due)
    return Assessment(KeyState.OK, age, due)


def enforced_deadline(policy: CredentialPolicy, last_changed: float | None) -> float | None:
    """When a credential stops being used (`enforce_max_age`), or None if it never does."""
    if not policy.enforce_max_age or policy.max_age is None or last_changed is None:
        return None
    return last_changed + policy.max_age


def warning_due(last_warned: float | None, now: float, every: float = DAY) -> bool:
    """Whether the once-a-day key-age warnings are due again."""
    return last_warned is None or now - last_warned >= every
