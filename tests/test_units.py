"""The shipped systemd units: hardening score and a clean `systemd-analyze verify`."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

UNITS = Path(__file__).resolve().parent.parent / "systemd"
SERVICE, SOCKET = UNITS / "turret.service", UNITS / "turret.socket"
ADMIN_SOCKET = UNITS / "turret-admin.socket"
ANALYZE = shutil.which("systemd-analyze")
pytestmark = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze not found")


def analyze(*args: str) -> subprocess.CompletedProcess[str]:
    assert ANALYZE is not None
    return subprocess.run(  # noqa: S603 - fixed argv
        [ANALYZE, *args], capture_output=True, text=True, timeout=60, check=False
    )


def test_units_service_hardening_exposure_at_most_1_4() -> None:
    # 1.4 since peer binding: no PrivateUsers= and ProtectProc=default (see the unit's comment).
    result = analyze("security", "--offline=yes", "--no-pager", str(SERVICE))
    score = re.search(r"Overall exposure level for turret\.service: (\d+\.\d+)", result.stdout)
    assert score is not None, result.stdout + result.stderr
    assert float(score[1]) <= 1.4, result.stdout
    assert result.stderr == ""


def test_units_verify_prints_nothing(tmp_path: Path) -> None:
    """`verify` also checks that ExecStart= exists, and Turret is not installed on a test host:
    a stub takes its place in a private mount namespace, so the host is left untouched."""
    exec_start = next(
        line.split("=", 1)[1]
        for line in SERVICE.read_text().splitlines()
        if line.startswith("ExecStart=")
    )
    binary = Path(shlex.split(exec_start)[0])
    script = (
        f"mount -t tmpfs tmpfs {binary.parent} && printf '#!/bin/sh\\n' > {binary} && "
        f"chmod 755 {binary} && exec {ANALYZE} verify --man=no {SERVICE} {SOCKET} {ADMIN_SOCKET}"
    )
    # Root needs only a new mount namespace; anyone else maps themselves to root in a user one.
    unshare = ["unshare", "--mount"] if os.geteuid() == 0 else ["unshare", "-r", "--mount"]
    result = subprocess.run(  # noqa: S603 - fixed argv
        [*unshare, "--propagation", "private", "sh", "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=tmp_path,
    )
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def test_units_keep_secrets_out_of_the_environment() -> None:
    lines = SERVICE.read_text().splitlines()
    assert not [line for line in lines if line.startswith(("Environment=", "EnvironmentFile="))]
    assert any(line.startswith("#LoadCredential=") for line in lines)  # an example to copy
    assert any(line.startswith("#LoadCredentialEncrypted=") for line in lines)
    assert "DynamicUser=yes" in lines


def test_units_journald_never_drops_audit_records() -> None:
    """journald's per-unit rate limit is off: Turret's own limits bound what it records, and a
    record journald dropped would be a decision nobody can read back."""
    lines = SERVICE.read_text().splitlines()
    assert "LogRateLimitIntervalSec=0" in lines
    assert not [line for line in lines if line.startswith("LogRateLimitBurst=")]


def test_units_state_directory_private_and_sockets_named_agents() -> None:
    """The state store lives in StateDirectory= (0700, writable under ProtectSystem=strict), and
    the sockets carry the name Turret serves the agents' API on."""
    service = SERVICE.read_text().splitlines()
    assert {"StateDirectory=turret", "StateDirectoryMode=0700", "ProtectSystem=strict"} <= set(
        service
    )
    assert "FileDescriptorName=agents" in SOCKET.read_text().splitlines()


def test_units_admin_socket_root_only_named_admin_for_turret() -> None:
    """The admin socket: root's alone (0600), named for the admin API, passed to turret.service
    beside the agents' sockets and never merged into them."""
    admin = set(ADMIN_SOCKET.read_text().splitlines())
    assert {
        "ListenStream=/run/turret/admin.sock",
        "FileDescriptorName=admin",
        "Service=turret.service",
        "SocketUser=root",
        "SocketGroup=root",
        "SocketMode=0600",
    } <= admin
    service = SERVICE.read_text().splitlines()
    assert "Sockets=turret.socket turret-admin.socket" in service
    assert "Also=turret.socket turret-admin.socket" in service
    assert "ListenStream=/run/turret/admin.sock" not in SOCKET.read_text()
