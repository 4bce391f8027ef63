"""systemd glue without systemd: a NOTIFY_SOCKET read by the test, systemd-socket-activate."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from turret.errors import StartupError
from turret.systemd_glue import (
    ActivatedSocket,
    Notifier,
    activated_sockets,
    by_name,
    monotonic_usec,
    watchdog_interval,
)


@pytest.fixture
def notify_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    """A datagram socket standing in for systemd's; NOTIFY_SOCKET points at it."""
    path = tmp_path / "notify"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(5)
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    yield sock
    sock.close()


def received(sock: socket.socket) -> list[str]:
    return sock.recv(4096).decode().split("\n")


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, None),
        ({"WATCHDOG_USEC": "30000000"}, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "4242"}, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "-5"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
    ],
)
def test_watchdog_interval_is_half_the_period_for_this_process(
    environ: dict[str, str], expected: float | None
) -> None:
    assert watchdog_interval(environ, pid=4242) == expected


def test_notifier_sends_reloading_and_monotonic_usec_in_one_datagram(
    notify_socket: socket.socket,
) -> None:
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    Notifier().reloading()
    after = monotonic_usec()
    lines = received(notify_socket)
    assert lines[0] == "RELOADING=1"
    stamp = int(lines[1].removeprefix("MONOTONIC_USEC="))
    assert before <= stamp <= after


def test_notifier_sends_ready_status_watchdog_stopping(notify_socket: socket.socket) -> None:
    notifier = Notifier()
    notifier.ready("1 agents")
    notifier.status("2 agents")
    notifier.watchdog()
    notifier.stopping("bye")
    assert received(notify_socket) == ["READY=1", "STATUS=1 agents"]
    assert received(notify_socket) == ["STATUS=2 agents"]
    assert received(notify_socket) == ["WATCHDOG=1"]
    assert received(notify_socket) == ["STOPPING=1", "STATUS=bye"]


def test_notifier_without_notify_socket_sends_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    Notifier().ready("x")  # must neither fail nor block


def test_activated_sockets_empty_when_not_activated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LISTEN_FDS", raising=False)
    monkeypatch.delenv("LISTEN_PID", raising=False)
    assert activated_sockets() == []


ACTIVATE = shutil.which("systemd-socket-activate")
needs_activate = pytest.mark.skipif(ACTIVATE is None, reason="systemd-socket-activate not found")

PROBE = """
from turret.errors import StartupError
from turret.systemd_glue import activated_sockets
import os
try:
    found = activated_sockets()
except StartupError as exc:
    print("refused:", exc)
else:
    print([(s.name, s.sock.family.name, s.sock.getsockname()) for s in found])
    print("LISTEN_FDS" in os.environ)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_activated(args: list[str], poke: socket.socket, address: str | tuple[str, int]) -> str:
    """Run PROBE under systemd-socket-activate, which starts it on the first connection."""
    assert ACTIVATE is not None
    proc = subprocess.Popen(  # noqa: S603 - fixed argv
        [ACTIVATE, *args, sys.executable, "-c", PROBE],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 10
        while True:  # until systemd-socket-activate has bound the socket
            try:
                poke.connect(address) if poke.type == socket.SOCK_STREAM else poke.sendto(
                    b"x", address
                )
                break
            except (ConnectionRefusedError, FileNotFoundError):
                assert time.monotonic() < deadline, "systemd-socket-activate never listened"
                time.sleep(0.02)
        out, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
        proc.wait()
        poke.close()
    assert proc.returncode == 0, err
    return out


@needs_activate
def test_activated_sockets_tcp_and_unix_with_names(tmp_path: Path) -> None:
    port, path = free_port(), str(tmp_path / "agents.sock")
    out = run_activated(
        ["-l", f"127.0.0.1:{port}", "-l", path, "--fdname=tcp:agents"],
        socket.socket(),
        ("127.0.0.1", port),
    )
    sockets, still_set = out.splitlines()
    assert sockets == str([("tcp", "AF_INET", ("127.0.0.1", port)), ("agents", "AF_UNIX", path)])
    assert still_set == "False"  # unset, so no child process can take the sockets


@needs_activate
def test_activated_sockets_refuses_a_datagram_socket(tmp_path: Path) -> None:
    path = str(tmp_path / "dgram.sock")
    out = run_activated(
        ["--datagram", "-l", path], socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM), path
    )
    assert out.startswith("refused: passed descriptor 3")
    assert os.path.exists(path)  # noqa: PTH110


@pytest.fixture
def listening() -> Iterator[Callable[[str], ActivatedSocket]]:
    """Real listening sockets on loopback, each under the FileDescriptorName= given."""
    made: list[socket.socket] = []

    def make(name: str) -> ActivatedSocket:
        sock = socket.socket()
        made.append(sock)
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        return ActivatedSocket(name, sock)

    yield make
    for sock in made:
        sock.close()


def test_by_name_groups_the_sockets_of_each_known_name_in_order(
    listening: Callable[[str], ActivatedSocket],
) -> None:
    tcp, unix, admin = listening("agents"), listening("agents"), listening("admin")
    grouped = by_name([tcp, unix, admin], {"agents", "admin"})
    assert grouped == {"agents": [tcp.sock, unix.sock], "admin": [admin.sock]}
    assert by_name([], {"agents"}) == {}


@pytest.mark.parametrize(
    "names",
    [
        ["turret.socket"],  # systemd's default: the socket unit's name
        ["turret"],  # the name turret.socket used before
        ["unknown"],  # what libsystemd reports when LISTEN_FDNAMES is not set
        ["admin"],  # not served yet: must not fall back to the agents' app
        ["Agents"],  # names are exact
        ["agents", "tcp"],  # one stranger among known sockets refuses them all
        ["", "agents"],
    ],
)
def test_by_name_refuses_a_name_turret_does_not_serve(
    listening: Callable[[str], ActivatedSocket], names: list[str]
) -> None:
    sockets = [listening(name) for name in names]
    with pytest.raises(StartupError) as caught:
        by_name(sockets, {"agents"})
    message = str(caught.value)
    strangers = [s for s in sockets if s.name != "agents"]
    for stranger in strangers:
        assert f"descriptor {stranger.sock.fileno()} is named {stranger.name!r}" in message
    assert message.endswith("FileDescriptorName= must be one of: agents (in the .socket unit)")
