"""Who may use the admin socket: the kernel's SO_PEERCRED, checked as each connection opens.

The socket is 0600, so another user cannot connect at all; these tests loosen its mode on
purpose (a mistaken drop-in, a group that should not be there) to reach the check behind it.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from tests.admin.conftest import Served, write_served
from tests.conftest import Upstream
from tests.gateway import Canaries
from turret.admin import Peer, peer_allowed
from turret.model import AdminSettings

NOBODY = 65534
SYSTEM_PYTHON = "/usr/bin/python3"  # readable by nobody, unlike the shared venv
CHILD = """
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.settimeout(10)
s.connect(sys.argv[1])
try:
    s.sendall(b"POST /v1/admin/killswitch HTTP/1.1\\r\\nHost: t\\r\\nContent-Length: 0\\r\\n\\r\\n")
    print(repr(s.recv(65536)))
except OSError as exc:
    print(type(exc).__name__)
"""

# Closed before a byte is read: the child sees end of file, or a reset or broken pipe if the
# close raced its write.
CLOSED = {"b''", "ConnectionResetError", "BrokenPipeError"}
needs_root = pytest.mark.skipif(os.getuid() != 0, reason="setuid() to another user needs root")


async def as_user(uid: int, gid: int, socket_path: str) -> str:
    """What a process of `uid` gets on `socket_path`: the bytes answered (b'' when closed)."""
    proc = await asyncio.create_subprocess_exec(
        SYSTEM_PYTHON, "-c", CHILD, socket_path,
        user=uid, group=gid, extra_groups=[], stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, _ = await proc.communicate()
    assert proc.returncode == 0
    return out.decode().strip()


def open_to_everyone(served: Served) -> None:
    """A mistaken mode on the socket and its directory: only the peer check is left."""
    Path(served.admin_socket).parent.chmod(0o711)
    Path(served.admin_socket).chmod(0o666)


@needs_root
async def test_admin_peer_of_another_uid_is_closed_unanswered_and_audited(served: Served) -> None:
    open_to_everyone(served)
    assert await as_user(NOBODY, NOBODY, served.admin_socket) in CLOSED
    status, doc = await served.admin("GET", "/v1/admin/status")
    assert status == 200 and doc["sealed"] is None  # the killswitch it sent never ran
    (refused,) = [r for r in served.audit() if r["TURRET_EVENT"] == "admin_refused"]
    assert refused["TURRET_OPERATOR_UID"] == str(NOBODY) and refused["PRIORITY"] == "4"


@needs_root
async def test_admin_peer_in_allow_uids_is_served(
    upstream: Upstream, leak_check: Canaries, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("STATE_DIRECTORY", raising=False)
    s = write_served(tmp_path, upstream, leak_check, admin=f"  allow_uids: [{NOBODY}]\n")
    await s.start()
    try:
        open_to_everyone(s)
        got = await as_user(NOBODY, NOBODY, s.admin_socket)
        assert got.startswith("b'HTTP/1.1 200")
        _, doc = await s.admin("GET", "/v1/admin/status")
        assert doc["sealed"]["by"] == f"uid:{NOBODY}"  # the operator's uid, from the kernel
        assert not [r for r in s.audit() if r["TURRET_EVENT"] == "admin_refused"]
    finally:
        await s.stop()


@needs_root
async def test_admin_peer_refused_again_after_reload_drops_its_uid(
    upstream: Upstream, leak_check: Canaries, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("STATE_DIRECTORY", raising=False)
    s = write_served(tmp_path, upstream, leak_check, admin=f"  allow_uids: [{NOBODY}]\n")
    await s.start()
    try:
        open_to_everyone(s)
        drop_allowed_uid(Path(s.options.config_path))
        assert s.gateway is not None and await s.gateway.reload()
        assert await as_user(NOBODY, NOBODY, s.admin_socket) in CLOSED
    finally:
        await s.stop()


def drop_allowed_uid(config: Path) -> None:
    config.write_text(config.read_text().replace(f"  allow_uids: [{NOBODY}]\n", ""))


OWN = 990
GROUP = (991, frozenset({"alice"}))


@pytest.mark.parametrize(
    ("peer", "settings", "allowed"),
    [
        (Peer(0, 0), AdminSettings(), True),  # root
        (Peer(OWN, OWN), AdminSettings(), True),  # Turret's own uid
        (Peer(1000, 1000), AdminSettings(), False),
        (Peer(1000, 1000), AdminSettings(allow_uids=(1000,)), True),
        (Peer(1001, 1001), AdminSettings(allow_uids=(1000,)), False),
        (Peer(1000, 991, GROUP, "bob"), AdminSettings(allow_group="ops"), True),  # primary gid
        (Peer(1000, 1000, GROUP, "alice"), AdminSettings(allow_group="ops"), True),  # member
        (Peer(1000, 1000, GROUP, "bob"), AdminSettings(allow_group="ops"), False),
        (Peer(1000, 1000, None, "alice"), AdminSettings(allow_group="ops"), False),  # no group
        (Peer(1000, 991, GROUP, "bob"), AdminSettings(), False),  # a group, but none configured
        (Peer(1000, 1000, GROUP, None), AdminSettings(allow_group="ops"), False),  # no user name
        (None, AdminSettings(allow_uids=(0,)), False),  # no credentials: TCP, or unknown
    ],
)
def test_peer_allowed_decides_by_uid_and_group(
    peer: Peer | None, settings: AdminSettings, *, allowed: bool
) -> None:
    assert peer_allowed(peer, OWN, settings) is allowed
