"""systemd glue: sockets handed over by socket activation, and sd_notify messages."""

from __future__ import annotations

import os
import socket

import sdnotify

from systemd import daemon  # type: ignore[attr-defined]


def activated_sockets() -> list[socket.socket]:
    """The listening sockets systemd passed (LISTEN_FDS), in order; empty when not activated."""
    fds = daemon.listen_fds(unset_environment=True)
    return [socket.socket(fileno=fd) for fd in fds]


class Notifier:
    """sd_notify messages; a no-op when not started by systemd with a NOTIFY_SOCKET."""

    def __init__(self) -> None:
        self._enabled = bool(os.environ.get("NOTIFY_SOCKET"))
        self._sender = sdnotify.SystemdNotifier() if self._enabled else None

    def send(self, *lines: str) -> None:
        if self._sender is not None:
            self._sender.notify("\n".join(lines))

    def ready(self, status: str) -> None:
        self.send("READY=1", f"STATUS={status}")

    def stopping(self) -> None:
        self.send("STOPPING=1", "STATUS=stopping")
