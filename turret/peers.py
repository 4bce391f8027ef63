"""Pure: who the peer of a unix connection is, from what the kernel and /proc say.

`unit_of_cgroup` reads the systemd unit out of a `/proc/PID/cgroup` text; `start_ticks` the start
time out of a `/proc/PID/stat` text; `same_process` decides whether a cgroup read by pid belongs
to the process that connected (the pid-reuse check); `binding_refusal` whether a peer is one an
agent's `bind:` allows. The syscalls and file reads are in `turret.peerid`.

A cgroup path is partly chosen by whoever may create cgroups below its own (a user manager, a
unit with `Delegate=yes`), so the unit is the first unit name after the slices from the root,
never a name further down, and any ambiguity (two lines for one hierarchy, hierarchies that
disagree, a name that is not a unit name) gives no unit at all.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from turret.model import Agent, PeerBinding

# systemd's unit name characters (unit_name_is_valid), bounded like its UNIT_NAME_MAX.
_UNIT_NAME = re.compile(r"[A-Za-z0-9:_.\\@-]{1,250}\.(?:service|scope)")
_SLICE_NAME = re.compile(r"[A-Za-z0-9:_.\\@-]{1,250}\.slice")
_USER_MANAGER = re.compile(r"user@([0-9]{1,10})\.service")
MAX_CGROUP_TEXT = 64 * 1024  # a /proc/PID/cgroup text longer than this is not read


@dataclass(frozen=True)
class CgroupUnit:
    """The peer's systemd unit, and its unit in its user manager when it runs in one."""

    unit: str
    user_unit: str | None = None


def _hierarchy_paths(text: str) -> dict[str, str] | None:
    """The path of each hierarchy systemd uses ("0::" unified, "name=systemd" v1); None when a
    hierarchy is listed twice (a line break in a cgroup name could forge a line)."""
    paths: dict[str, str] = {}
    for line in text.splitlines():
        hid, sep1, rest = line.partition(":")
        controllers, sep2, path = rest.partition(":")
        if not (sep1 and sep2):
            return None
        key = "unified" if hid == "0" and controllers == "" else controllers
        if key not in ("unified", "name=systemd"):
            continue
        if key in paths:
            return None
        paths[key] = path
    return paths


def _strip_root(path: str, root: str) -> list[str] | None:
    """The segments of `path` below `root` (the cgroup systemd's tree starts at, e.g. a
    container's own cgroup seen from outside its namespace); None if it is not below it."""
    if not path.startswith("/"):
        return None
    segments = [s for s in path.split("/") if s]
    top = [s for s in root.split("/") if s]
    if segments[: len(top)] != top:
        return None
    return segments[len(top) :]


def _first_unit(segments: list[str]) -> tuple[str, list[str]] | None:
    """The first segment after the leading slices, if it is a unit name, and what follows."""
    for i, segment in enumerate(segments):
        if _SLICE_NAME.fullmatch(segment):
            continue
        if _UNIT_NAME.fullmatch(segment):
            return segment, segments[i + 1 :]
        return None
    return None


def unit_of_cgroup(text: str, root: str = "") -> CgroupUnit | None:
    """The unit of a `/proc/PID/cgroup` text (v2, v1 or hybrid), None if it has none or the
    text is not unambiguous. `root` is the cgroup path systemd's tree is mounted at."""
    if len(text) > MAX_CGROUP_TEXT:
        return None
    paths = _hierarchy_paths(text)
    if not paths:
        return None
    unified, legacy = paths.get("unified"), paths.get("name=systemd")
    # On a hybrid host both name the same cgroup; a unified path of "/" means systemd does not
    # use that hierarchy (legacy mode).
    chosen = {p for p in (unified, legacy) if p is not None and p != "/"}
    if len(chosen) != 1:
        return None
    segments = _strip_root(chosen.pop(), root)
    found = _first_unit(segments) if segments is not None else None
    if found is None:
        return None
    unit, below = found
    user_unit = None
    if _USER_MANAGER.fullmatch(unit):
        inner = _first_unit(below)
        user_unit = inner[0] if inner is not None else None
    return CgroupUnit(unit, user_unit)


def cgroup_root(own_cgroup: str) -> str:
    """Where systemd's tree starts, from Turret's own `/proc/self/cgroup`: the path above its
    first slice ("" when that is the root, or when Turret runs in no slice)."""
    paths = _hierarchy_paths(own_cgroup) or {}
    found = [p for p in (paths.get("unified"), paths.get("name=systemd")) if p not in (None, "/")]
    segments = [s for s in (found[0] if found else "").split("/") if s]
    for i, segment in enumerate(segments):
        if _SLICE_NAME.fullmatch(segment):
            return "/" + "/".join(segments[:i]) if i else ""
    return ""


def start_ticks(stat_text: str) -> int | None:
    """Field 22 of a `/proc/PID/stat` text: the start time in clock ticks since boot. The
    command name (field 2, in parentheses) may itself hold spaces and parentheses, so the
    fields are counted from the last ')'."""
    _, paren, rest = stat_text.rpartition(")")
    fields = rest.split()
    if not paren or len(fields) < 20 or not fields[19].isdigit():
        return None
    return int(fields[19])


def same_process(before: int | None, after: int | None, accepted_ticks: int) -> bool:
    """Whether a cgroup read between two reads of a pid's start time (`before`, `after`) is the
    connecting process's: the same process throughout, and one started no later than the
    connection was accepted (a process started after it cannot have connected; this closes a
    reuse of the pid before the first read, down to one clock tick)."""
    return before is not None and before == after and before <= accepted_ticks


def binding_refusal(
    bindings: Iterable[PeerBinding], uid: int | None, unit: str | None
) -> str | None:
    """None if the peer (`uid`, `unit`; both None over TCP) satisfies every binding (the
    agent's own and each of its groups'; a binding is satisfied by any of its entries), else a
    reason for the audit record. The reason never says which entry was closest."""
    for binding in bindings:
        if not binding.allows(uid, unit):
            return f"peer uid={_shown(uid)} unit={_shown(unit)} is not bound to this agent"
    return None


def _shown(value: object) -> str:
    return "-" if value is None else str(value)


def bindings_of(agent: Agent) -> tuple[PeerBinding, ...]:
    """Every binding that applies to `agent`: its own and each of its groups'."""
    found = (agent.bind, *(g.bind for g in agent.groups))
    return tuple(b for b in found if b is not None)


def must_be_contained(agent: Agent) -> bool:
    """Whether `agent` or one of its groups says `require_contained: true`."""
    return agent.require_contained or any(g.require_contained for g in agent.groups)


def asks_containment(agents: Iterable[Agent]) -> bool:
    """Whether any of `agents` has its caller's containment checked or recorded (it requires
    containment, or is bound): only then is the peer's confinement read at accept."""
    return any(must_be_contained(a) or bindings_of(a) for a in agents)
