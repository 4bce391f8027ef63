"""Reading the config's `admin:` section: the admin socket's path and who may use it."""

from __future__ import annotations

import re
from typing import Any

from turret.config.checker import Checker
from turret.config.yamlload import join
from turret.model import DEFAULT_ADMIN_SOCKET, AdminSettings

# A POSIX portable user or group name (what useradd and groupadd accept by default).
GROUP_NAME = re.compile(r"[a-z_][a-z0-9_-]{0,31}")
MAX_UID = 2**32 - 2  # (uid_t)-1 means "no uid"


def read_admin(ck: Checker, value: Any) -> AdminSettings:
    """`admin: {socket, allow_uids, allow_group}`; present at all, it binds the admin socket
    (at /run/turret/admin.sock unless `socket:` says where) when not socket-activated."""
    m = ck.mapping(
        "admin", {} if value is None else value, set(), {"socket", "allow_uids", "allow_group"}
    )
    if m is None:
        return AdminSettings()
    socket = DEFAULT_ADMIN_SOCKET
    if "socket" in m:
        socket = ck.string("admin.socket", m["socket"]) or DEFAULT_ADMIN_SOCKET
        if not socket.startswith("/"):
            ck.fail("admin.socket", "must be an absolute path to a unix socket")
    uids = []
    for path, uid in ck.items("admin.allow_uids", m.get("allow_uids", [])):
        number = ck.number(path, uid, 0, MAX_UID, integer=True)
        if number is not None:
            uids.append(int(number))
    group = None
    if "allow_group" in m:
        group = ck.string(join("admin", "allow_group"), m["allow_group"], GROUP_NAME)
    return AdminSettings(socket, tuple(uids), group)
