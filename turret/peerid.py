"""Who is at the other end of an agent's unix connection: the kernel's word, read once at accept.

`identify` reads `SO_PEERCRED` (pid, uid, gid) and resolves the peer's systemd unit from
`/proc/PID/cgroup` without a pid-reuse race: with `SO_PEERPIDFD` (Linux 6.5) the kernel hands
over a pidfd of the connecting process, and the cgroup read by pid is the peer's if that pidfd
has not exited after the read (a pid is not reused while its process lives); without it, the
pid's start time must be the same before and after the read and no later than the accept. The
parsing is pure, in `turret.peers`. `SystemdUnits` reads a unit's properties with `systemctl
show`, cached per unit, for the containment report (`turret.containment`), with what the kernel
shows of the peer process's confinement, read with its cgroup.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import select
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from turret.containment import (
    PROPERTIES,
    Containment,
    ProcessFacts,
    assess,
    parse_show,
    process_facts,
)
from turret.peers import cgroup_root, same_process, start_ticks, unit_of_cgroup
from turret.principal import Peer

log = logging.getLogger("turret.peers")
SO_PEERPIDFD = getattr(socket, "SO_PEERPIDFD", 77)  # Python 3.11's socket module lacks it
_UCRED = struct.Struct("3i")
_INT = struct.Struct("i")
PROC = Path("/proc")


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:  # gone, or hidden from Turret (ProtectProc=, another user's process)
        return None


@functools.cache
def own_root() -> str:
    """The cgroup path systemd's tree starts at, as Turret's own cgroup shows it."""
    return cgroup_root(_read(PROC / "self" / "cgroup") or "")


def boot_ticks() -> int:
    """Now, in the clock ticks since boot that `/proc/PID/stat` gives start times in."""
    return int(time.clock_gettime(time.CLOCK_BOOTTIME) * os.sysconf("SC_CLK_TCK"))


def _exited(pidfd: int) -> bool:
    """Whether the process of `pidfd` has exited (a pidfd polls readable once it has)."""
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    return bool(poller.poll(0))


def _peer_pidfd(sock: socket.socket) -> int | None:
    try:
        return int(_INT.unpack(sock.getsockopt(socket.SOL_SOCKET, SO_PEERPIDFD, _INT.size))[0])
    except OSError:  # before Linux 6.5
        return None


def read_proc(pid: int, name: str) -> str | None:
    """`/proc/PID/NAME`, None if it cannot be read."""
    return _read(PROC / str(pid) / name)


ProcReader = Callable[[int, str], str | None]


PEER_FILES = ("cgroup", "status", "net/dev")
UNIT_FILES = ("cgroup",)  # the peer's unit only: what binding and the audit's peer fields need


def peer_files(
    pid: int,
    pidfd: int | None,
    accepted: int,
    read: ProcReader = read_proc,
    *,
    names: tuple[str, ...] = PEER_FILES,
) -> dict[str, str | None] | None:
    """The `names` of `/proc/PID` of the process that connected (each None if it cannot be
    read); None if the pid may no longer be that process."""
    if pidfd is not None:
        texts = {name: read(pid, name) for name in names}
        return None if _exited(pidfd) else texts
    before = start_ticks(read(pid, "stat") or "")
    texts = {name: read(pid, name) for name in names}
    after = start_ticks(read(pid, "stat") or "")
    return texts if same_process(before, after, accepted) else None


def identify(sock: socket.socket, root: str | None = None, *, sandbox: bool = True) -> Peer | None:
    """The peer of a unix stream socket (None for any other socket): SO_PEERCRED, and the unit
    its cgroup names and (with `sandbox`) what the kernel shows of its confinement, where these
    can be read without a race. Without `sandbox` the peer's `sandbox` is None, as when it
    cannot be read: only containment (`turret.containment`) asks for it."""
    if sock.family != socket.AF_UNIX:
        return None
    accepted = boot_ticks()
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
        pid, uid, gid = _UCRED.unpack(raw)
    except OSError:
        return None
    pidfd = _peer_pidfd(sock)
    try:
        names = PEER_FILES if sandbox else UNIT_FILES
        texts = peer_files(pid, pidfd, accepted, names=names) if pid > 0 else None
    finally:
        if pidfd is not None:
            os.close(pidfd)
    texts = texts or {}
    cgroup = texts.get("cgroup")
    found = unit_of_cgroup(cgroup, own_root() if root is None else root) if cgroup else None
    unit, user_unit = (found.unit, found.user_unit) if found else (None, None)
    facts = process_facts(texts.get("status"), texts.get("net/dev"))
    return Peer(pid, uid, gid, unit, user_unit, facts)


@dataclass
class _Cached:
    props: dict[str, str] | None
    at: float


class SystemdUnits:
    """Units' properties from `systemctl show`, each kept `ttl` seconds, and their containment.
    A unit whose properties cannot be read is `unknown` (and asked again after the TTL)."""

    def __init__(
        self,
        *,
        ttl: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        systemctl: str = "systemctl",
        turret_uid: int | None = None,
    ) -> None:
        self._ttl, self._clock, self._systemctl = ttl, clock, systemctl
        self._uid = os.getuid() if turret_uid is None else turret_uid
        self._cache: dict[str, _Cached] = {}
        self._warned: set[str] = set()  # units whose failure was logged: once each

    async def containment(
        self, unit: str | None, uid: int | None, facts: ProcessFacts | None
    ) -> Containment:
        """The containment of a caller in `unit` that connected as `uid`, with its process's
        `facts`."""
        # A process alone in its network namespace needs no word from systemd on its network,
        # the only thing its unit's properties could add to what the kernel showed.
        sealed = facts is not None and facts.interfaces <= {"lo"}
        props = await self.properties(unit) if unit is not None and not sealed else None
        return assess(props, uid, self._uid, facts)

    async def properties(self, unit: str) -> dict[str, str] | None:
        """`unit`'s containment properties (cached), None if systemctl could not say."""
        now = self._clock()
        cached = self._cache.get(unit)
        if cached is None or now - cached.at >= self._ttl:
            cached = self._cache[unit] = _Cached(await self._show(unit), now)
        return cached.props

    async def _show(self, unit: str) -> dict[str, str] | None:
        try:
            proc = await asyncio.create_subprocess_exec(
                self._systemctl, "show", "--no-pager", "-p", ",".join(PROPERTIES), "--", unit,
                stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )  # fmt: skip
        except OSError:
            log.warning("systemctl not available: the containment of %s is unknown", unit)
            return None
        try:
            async with asyncio.timeout(5):
                out, err = await proc.communicate()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            return None
        if proc.returncode != 0:
            if unit not in self._warned:
                self._warned.add(unit)
                problem = err.decode("utf-8", errors="replace").strip().splitlines()[:1]
                log.warning("systemctl show %s failed (%s): %s", unit, proc.returncode, problem)
            return None
        return parse_show(out.decode("utf-8", errors="replace"))
