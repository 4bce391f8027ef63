"""systemd glue: sockets handed over by socket activation, sd_notify messages, the watchdog period.

Everything here also works without systemd: no activated sockets means an empty list, no
NOTIFY_SOCKET makes every notification a no-op, no WATCHDOG_USEC means no watchdog.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

from systemd import daemon  # type: ignore[attr-defined]
from turret.errors import StartupError


@dataclass(frozen=True)
class ActivatedSocket:
    """A listening socket systemd passed, with its FileDescriptorName= (LISTEN_FDNAMES)."""

    name: str
    sock: socket.socket


def activated_sockets() -> list[ActivatedSocket]:
    """The listening stream sockets systemd passed, in order; empty when not socket-activated.

    The LISTEN_* variables are removed so that no child process could take the sockets for its own.
    A passed descriptor that is not a listening stream socket stops start-up: serving on it would
    silently do nothing.
    """
    named = daemon.listen_fds_with_names(unset_environment=True)
    for variable in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        os.environ.pop(variable, None)  # libsystemd unset them in C; os.environ is a copy
    result = []
    for fd, name in sorted(named.items()):
        if not daemon.is_socket(fd, socket.AF_UNSPEC, socket.SOCK_STREAM, 1):
            raise StartupError(f"passed descriptor {fd} ({name}) is not a listening stream socket")
        result.append(ActivatedSocket(name or "unknown", socket.socket(fileno=fd)))
    return result


def by_name(
    sockets: Sequence[ActivatedSocket], known: Collection[str]
) -> dict[str, list[socket.socket]]:
    """The activated sockets grouped by their FileDescriptorName=, in order within a name.

    Each name stands for one audience (the agents' API; the admin API next), so a socket under a
    name Turret does not know stops start-up rather than serve the wrong one. A socket unit
    without FileDescriptorName= passes systemd's default, the unit's own name: refused too.
    """
    strangers = [s for s in sockets if s.name not in known]
    if strangers:
        found = ", ".join(f"descriptor {s.sock.fileno()} is named {s.name!r}" for s in strangers)
        expected = ", ".join(sorted(known))
        raise StartupError(
            f"socket-activated with a socket Turret does not serve: {found}; "
            f"FileDescriptorName= must be one of: {expected} (in the .socket unit)"
        )
    grouped: dict[str, list[socket.socket]] = {}
    for passed in sockets:
        grouped.setdefault(passed.name, []).append(passed.sock)
    return grouped


def watchdog_interval(environ: Mapping[str, str], pid: int) -> float | None:
    """Seconds between WATCHDOG=1 pings (half of WATCHDOG_USEC), or None when not watched.

    systemd sets WATCHDOG_PID to the process it watches; a value for another process (for example
    inherited through a wrapper that did not exec) means the watchdog is not ours to feed.
    """
    usec, watched_pid = environ.get("WATCHDOG_USEC", ""), environ.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    if watched_pid and watched_pid != str(pid):
        return None
    return int(usec) / 2_000_000


def monotonic_usec() -> int:
    """CLOCK_MONOTONIC in microseconds, the clock systemd expects in MONOTONIC_USEC=."""
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


class Notifier:
    """sd_notify messages (libsystemd's); a no-op when there is no NOTIFY_SOCKET."""

    def send(self, *lines: str) -> None:
        """Send `lines` as one datagram, so systemd sees them together."""
        daemon.notify("\n".join(lines))

    def ready(self, status: str) -> None:
        """Start-up or a reload is complete: config and credentials are loaded, sockets bound."""
        self.send("READY=1", f"STATUS={status}")

    def reloading(self) -> None:
        """A reload begins; systemd (notify-reload) matches it to its SIGHUP by the timestamp."""
        self.send("RELOADING=1", f"MONOTONIC_USEC={monotonic_usec()}", "STATUS=reloading")

    def status(self, status: str) -> None:
        self.send(f"STATUS={status}")

    def watchdog(self) -> None:
        self.send("WATCHDOG=1")

    def stopping(self, status: str) -> None:
        self.send("STOPPING=1", f"STATUS={status}")
