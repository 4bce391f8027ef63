"""Binding sockets when systemd does not hand them over: `listen:` entries and the admin socket."""

from __future__ import annotations

import contextlib
import grp
import logging
import os
import stat
from pathlib import Path

from aiohttp import web

log = logging.getLogger("turret")


def address_of(sockname: object) -> str:
    """`host:port` for TCP, `unix:/path` for a unix socket, as in `listen:`."""
    if isinstance(sockname, tuple):
        host = str(sockname[0])
        return f"[{host}]:{sockname[1]}" if ":" in host else f"{host}:{sockname[1]}"
    return f"unix:{sockname}"


async def listen(runner: web.AppRunner, address: str) -> None:
    """Serve `runner` at a `listen:` address: a unix socket (0660) or host:port."""
    if address.startswith("unix:"):
        path = address[len("unix:") :]
        remove_stale_socket(path)
        await web.UnixSite(runner, path).start()
        # Who may connect is decided by the socket's permissions: owner and group only.
        os.chmod(path, 0o660)  # noqa: PTH101 - one call at start-up, not worth a Path
        return
    host, _, port = address.rpartition(":")
    await web.TCPSite(runner, host.strip("[]"), int(port), reuse_address=True).start()


async def listen_admin(runner: web.AppRunner, path: str, group: str | None) -> None:
    """The admin socket: owner only, or owner and `admin.allow_group` when one is configured."""
    remove_stale_socket(path)
    await web.UnixSite(runner, path).start()
    mode = 0o600
    if group is not None:
        try:
            os.chown(path, -1, grp.getgrnam(group).gr_gid)
            mode = 0o660
        except (KeyError, PermissionError) as exc:
            log.warning("admin socket: cannot give group %s access: %s", group, exc)
    os.chmod(path, mode)  # noqa: PTH101 - one call at start-up, not worth a Path


def remove_stale_socket(path: str) -> None:
    """Remove a socket left by an earlier run; refuse to touch anything else at that path."""
    with contextlib.suppress(FileNotFoundError):
        if stat.S_ISSOCK(os.lstat(path).st_mode):
            Path(path).unlink()
