"""Reading an agent's or group's `bind:` (the callers its tokens work for) and
`require_contained:`.

`bind: {uid: 1000}`, `{user: opencode}` or `{unit: opencode.service}`, or a list of them (any
one is enough). A user is resolved to its uid when the config is read, so an unknown user is a
config error, and a user renamed later keeps the uid it had.
"""

from __future__ import annotations

import pwd
import re
from collections.abc import Callable
from typing import Any

from turret.config.checker import Checker
from turret.config.yamlload import join
from turret.model import PeerBinding

BIND_KEYS = frozenset({"bind", "require_contained"})
UNIT_NAME = re.compile(r"[A-Za-z0-9:_.\\@-]{1,250}\.(?:service|scope)")
# The uid an unmapped user appears as inside a user namespace (PrivateUsers=, containers): every
# such peer has it, so a binding to it would bind to no one in particular.
OVERFLOW_UID = 65534
MAX_UID = 2**32 - 2  # (uid_t)-1 is "no uid"
UserLookup = Callable[[str], int]


def _uid_of(name: str) -> int:
    return pwd.getpwnam(name).pw_uid


def read_bind_settings(
    ck: Checker, path: str, spec: dict[str, Any], users: UserLookup = _uid_of
) -> tuple[PeerBinding | None, bool]:
    """The `bind:` of an agent or group at `path` (None when it has none) and its
    `require_contained`."""
    contained = spec.get("require_contained", False)
    if not isinstance(contained, bool):
        ck.fail(join(path, "require_contained"), "must be true or false")
        contained = False
    if "bind" not in spec:
        return None, contained
    where, value = join(path, "bind"), spec["bind"]
    entries = ck.items(where, value) if isinstance(value, list) else [(where, value)]
    if not entries and isinstance(value, list):
        ck.fail(where, "must name at least one uid, user or unit")
    uids: set[int] = set()
    units: set[str] = set()
    for p, entry in entries:
        uid, unit = _read_entry(ck, p, entry, users)
        if uid is not None:
            uids.add(uid)
        if unit is not None:
            units.add(unit)
    return PeerBinding(frozenset(uids), frozenset(units)), contained


def _read_entry(
    ck: Checker, path: str, entry: Any, users: UserLookup
) -> tuple[int | None, str | None]:
    """One `{uid: N}`, `{user: NAME}` or `{unit: NAME.service}`: its uid or its unit."""
    if not isinstance(entry, dict) or len(entry) != 1:
        ck.fail(path, "must be one of {uid: N}, {user: NAME}, {unit: NAME.service}")
        return None, None
    ((key, value),) = entry.items()
    at = join(path, str(key))
    if key == "uid":
        return _checked_uid(ck, at, ck.number(at, value, 0, MAX_UID, integer=True)), None
    if key == "user":
        name = ck.string(at, value)
        if name is None:
            return None, None
        try:
            return _checked_uid(ck, at, users(name)), None
        except KeyError:
            ck.fail(at, f"no user {name!r} on this host")
            return None, None
    if key == "unit":
        return None, ck.string(at, value, UNIT_NAME)
    ck.fail(at, "unknown key (uid, user or unit)")
    return None, None


def _checked_uid(ck: Checker, path: str, uid: int | None) -> int | None:
    if uid == OVERFLOW_UID:
        ck.fail(path, f"uid {OVERFLOW_UID} is the overflow uid every unmapped peer appears as")
        return None
    return uid
