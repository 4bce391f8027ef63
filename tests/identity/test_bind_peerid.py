"""Reading the peer from the kernel: SO_PEERCRED and SO_PEERPIDFD on real sockets, the cgroup
read by pid checked against a real pidfd, and the start-time check over a /proc laid out by the
test (so a pid reuse can be staged between the reads)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from turret import peerid
from turret.peerid import PROC, SO_PEERPIDFD, _peer_pidfd, boot_ticks, identify, peer_files
from turret.principal import Peer

SERVICE = "0::/system.slice/opencode.service\n"


def test_identify_reads_the_kernels_credentials_of_a_unix_peer() -> None:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with a, b:
        peer = identify(a, root="")
    assert peer is not None
    assert (peer.pid, peer.uid, peer.gid) == (os.getpid(), os.getuid(), os.getgid())
    own = (PROC / "self" / "cgroup").read_text()
    assert isinstance(peer, Peer) and (peer.unit is None) == ("service" not in own)


def test_identify_is_none_for_a_tcp_socket() -> None:
    with socket.socket() as tcp:
        assert identify(tcp, root="") is None


def test_peer_pidfd_is_the_connecting_process() -> None:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with a, b:
        pidfd = _peer_pidfd(a)
    if pidfd is None:
        pytest.skip(f"this kernel has no SO_PEERPIDFD ({SO_PEERPIDFD})")
    try:
        info = (PROC / "self" / "fdinfo" / str(pidfd)).read_text()
        assert f"Pid:\t{os.getpid()}\n" in info
    finally:
        os.close(pidfd)


def stat_line(pid: int, start: int) -> str:
    return f"{pid} (agent) " + " ".join(["S", *["0"] * 18, str(start), "0"]) + "\n"


class FakeProc:
    """/proc as the reader sees it, one process at a time; `reuse_at` replaces the process
    (another start time) when that file of it is read."""

    def __init__(self, pid: int, start: int, reuse_at: str | None = None) -> None:
        self.files = {(pid, "stat"): stat_line(pid, start), (pid, "cgroup"): SERVICE}
        self.pid, self.reuse_at, self.reads = pid, reuse_at, list[str]()

    def __call__(self, pid: int, name: str) -> str | None:
        self.reads.append(name)
        if name == self.reuse_at:
            self.files[(pid, "stat")] = stat_line(pid, 10**6)
        return self.files.get((pid, name))


def cgroup(pid: int, pidfd: int | None, accepted: int, *read: FakeProc) -> str | None:
    """The cgroup text `peer_files` read, None if it refused the pid."""
    files = peer_files(pid, pidfd, accepted, *read)
    return None if files is None else files["cgroup"]


def test_peer_files_without_pidfd_checks_the_start_time_around_the_read() -> None:
    proc = FakeProc(77, start=100)
    assert cgroup(77, None, 100, proc) == SERVICE
    assert proc.reads == ["stat", "cgroup", "status", "net/dev", "stat"]
    assert cgroup(77, None, 500, proc) == SERVICE
    # a process started after the accept holds the pid now: not the peer
    assert cgroup(77, None, 99, proc) is None
    # the process is gone (or hidden from Turret)
    assert cgroup(78, None, 500, proc) is None
    proc.files[(77, "stat")] = "77 (agent) truncated"
    assert cgroup(77, None, 500, proc) is None


@pytest.mark.parametrize("moment", ["cgroup", "stat"])
def test_peer_files_without_pidfd_refuses_a_pid_reused_between_the_reads(moment: str) -> None:
    proc = FakeProc(77, start=100, reuse_at=moment)
    assert cgroup(77, None, 500, proc) is None


@pytest.fixture
def child() -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE
    )
    yield proc
    if proc.poll() is None:
        proc.kill()
        proc.wait()
    assert proc.stdin is not None
    proc.stdin.close()


def test_peer_files_with_a_live_pidfd_reads_the_cgroup(child: subprocess.Popen[bytes]) -> None:
    pidfd = os.pidfd_open(child.pid)
    try:
        proc = FakeProc(child.pid, start=10**9)  # with a pidfd, the start time is not asked
        assert cgroup(child.pid, pidfd, 0, proc) == SERVICE
        assert proc.reads == ["cgroup", "status", "net/dev"]
        real = (PROC / str(child.pid) / "cgroup").read_text()
        assert cgroup(child.pid, pidfd, 0) == real
    finally:
        os.close(pidfd)


def test_peer_files_with_the_pidfd_of_an_exited_process_is_none(
    child: subprocess.Popen[bytes],
) -> None:
    pidfd = os.pidfd_open(child.pid)
    try:
        child.communicate(b"")  # it exits: its pid may now be anyone's
        assert cgroup(child.pid, pidfd, boot_ticks(), FakeProc(child.pid, start=0)) is None
    finally:
        os.close(pidfd)


def test_boot_ticks_is_after_this_process_started() -> None:
    start = int((PROC / "self" / "stat").read_text().rpartition(")")[2].split()[19])
    assert start <= boot_ticks()


def test_identify_without_sandbox_reads_only_the_cgroup(monkeypatch: pytest.MonkeyPatch) -> None:
    read: list[str] = []
    real = peerid._read

    def spy(path: Path) -> str | None:
        read.append(path.name)
        return real(path)

    monkeypatch.setattr(peerid, "_read", spy)
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with a, b:
        lean = identify(a, root="", sandbox=False)
        assert lean is not None and lean.uid == os.getuid() and lean.sandbox is None
        assert "cgroup" in read and not {"status", "dev"} & set(read)
        read.clear()
        full = identify(a, root="")
    assert {"cgroup", "status", "dev"} <= set(read)
    assert full is not None and full.sandbox is not None
