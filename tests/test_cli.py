"""The `turret` command: check-config, token new, --version, and serve as a real process."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from turret import __version__
from turret.auth import TOKEN_PREFIX, token_sha256

GOOD = """
services:
  gitea:
    url: http://127.0.0.1:9
    auth: {bearer: gitea-token}
agents:
  bot:
    token_credential: bot-token
    proxy: [{service: gitea, methods: [GET], paths: ["/x"]}]
"""


def turret(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", "turret", *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_cli_version() -> None:
    result = turret("--version")
    assert result.returncode == 0 and result.stdout.strip() == f"turret {__version__}"


def test_cli_check_config_ok_without_credentials(tmp_path: Path) -> None:
    path = tmp_path / "turret.yaml"
    path.write_text(GOOD)
    result = turret("check-config", str(path))
    assert result.returncode == 0, result.stderr
    assert "OK (1 services, 1 agents)" in result.stdout


def test_cli_check_config_reports_every_error(tmp_path: Path) -> None:
    path = tmp_path / "turret.yaml"
    path.write_text("services:\n  g:\n    url: ftp://x\n    auth: {bearer: t}\n    nope: 1\n")
    result = turret("check-config", str(path))
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert f"{path}:line 5: services.g.nope: unknown key" in lines
    assert f"{path}:line 3: services.g.url: scheme must be http or https" in lines
    assert lines[-1] == "2 error(s)"


def test_cli_check_config_with_credentials(
    tmp_path: Path, creds_dir: Path, no_leaks_in: Callable[[str], None]
) -> None:
    path = tmp_path / "turret.yaml"
    path.write_text(GOOD.replace("bot-token", "absent-token"))
    result = turret("check-config", str(path), "--credentials-dir", str(creds_dir))
    assert result.returncode == 1
    assert "credential 'absent-token' is missing" in result.stderr
    assert "LoadCredential=absent-token:" in result.stderr
    no_leaks_in(result.stdout + result.stderr)


def test_cli_token_new() -> None:
    result = turret("token", "new", "opencode")
    assert result.returncode == 0
    lines = result.stdout.splitlines()
    token = next(line for line in lines if line.startswith(TOKEN_PREFIX))
    assert len(token) >= len(TOKEN_PREFIX) + 43  # 32 random bytes, base64url
    assert f"    token_sha256: {token_sha256(token)}" in lines
    assert turret("token", "new", "Bad Name!").returncode == 2


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify.sock"))
    sock.settimeout(20)
    yield sock
    sock.close()


def wait_for(sock: socket.socket, prefix: str) -> str:
    while True:
        message = sock.recv(4096).decode()
        if any(line.startswith(prefix) for line in message.splitlines()):
            return message


def test_cli_serve_tcp_and_unix_then_stops_cleanly(
    tmp_path: Path,
    creds_dir: Path,
    canaries: dict[str, str],
    notify_socket: socket.socket,
    no_leaks_in: Callable[[str], None],
) -> None:
    (creds_dir / "bot-token").write_text(canaries["bot-token"])
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    unix = tmp_path / "agents.sock"
    config = tmp_path / "turret.yaml"
    config.write_text(f'listen: ["127.0.0.1:{port}", "unix:{unix}"]\n' + GOOD)
    audit = tmp_path / "audit.jsonl"
    env = {**os.environ, "NOTIFY_SOCKET": notify_socket.getsockname()}
    proc = subprocess.Popen(  # noqa: S603
        [
            sys.executable,
            "-m",
            "turret",
            "serve",
            "--config",
            str(config),
            "--credentials-dir",
            str(creds_dir),
            "--audit-file",
            str(audit),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(notify_socket, "READY=1")
        request = (
            b"GET /v1/whoami HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
            b"Authorization: Bearer " + canaries["bot-token"].encode() + b"\r\n\r\n"
        )
        for family, address in ((socket.AF_INET, ("127.0.0.1", port)), (socket.AF_UNIX, str(unix))):
            with socket.socket(family) as s:
                s.settimeout(10)
                s.connect(address)
                s.sendall(request)
                reply = b"".join(iter(lambda s=s: s.recv(65536), b""))  # type: ignore[misc]
            assert reply.startswith(b"HTTP/1.1 200"), reply
            assert b'"agent": "bot"' in reply
            no_leaks_in(reply.decode())
        assert oct(unix.stat().st_mode & 0o777) == "0o660"
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    events = [json.loads(line)["TURRET_EVENT"] for line in audit.read_text().splitlines()]
    assert events[0] == "started" and events[-1] == "stopped"
    no_leaks_in(out + err + audit.read_text())


def test_cli_serve_refuses_to_start_without_credentials(tmp_path: Path, creds_dir: Path) -> None:
    config = tmp_path / "turret.yaml"
    config.write_text('listen: ["127.0.0.1:1"]\n' + GOOD.replace("bot-token", "absent-token"))
    audit = tmp_path / "audit.jsonl"
    result = turret(
        "serve",
        "--config",
        str(config),
        "--credentials-dir",
        str(creds_dir),
        "--audit-file",
        str(audit),
    )
    assert result.returncode == 78
    assert "credential 'absent-token' is missing" in result.stderr
    (record,) = [json.loads(line) for line in audit.read_text().splitlines()]
    assert record["TURRET_EVENT"] == "config_error" and "absent-token" in record["TURRET_REASON"]


def test_cli_serve_refuses_bad_config(tmp_path: Path) -> None:
    config = tmp_path / "turret.yaml"
    config.write_text("services: {g: {url: 'x'}}\n")
    result = turret("serve", "--config", str(config), "--audit-file", str(tmp_path / "a.jsonl"))
    assert result.returncode == 78
    assert "services.g" in result.stderr


def newer_schema(state: Path) -> None:
    state.mkdir()
    with contextlib.closing(sqlite3.connect(state / "turret.db")) as db:
        db.execute("PRAGMA user_version = 999")


@pytest.mark.parametrize(
    ("make", "says"),
    [
        (lambda state: None, "does not exist"),
        (lambda state: state.write_text("not a directory"), "is not a directory"),
        (newer_schema, "newer"),
    ],
    ids=["missing", "a-file", "newer-schema"],
)
def test_cli_serve_refuses_an_unusable_state_dir(
    tmp_path: Path, creds_dir: Path, make: Callable[[Path], None], says: str
) -> None:
    (creds_dir / "bot-token").write_text("x")
    config = tmp_path / "turret.yaml"
    config.write_text('listen: ["127.0.0.1:1"]\n' + GOOD)
    audit, state = tmp_path / "audit.jsonl", tmp_path / "state"
    make(state)
    result = turret(
        "serve", "--config", str(config), "--credentials-dir", str(creds_dir),
        "--audit-file", str(audit), "--state-dir", str(state),
    )  # fmt: skip
    assert result.returncode == 78
    assert result.stderr.startswith("turret: refusing to start:\n")
    assert str(state) in result.stderr and says in result.stderr
    (record,) = [json.loads(line) for line in audit.read_text().splitlines()]
    assert record["TURRET_EVENT"] == "config_error"
    assert record["MESSAGE"] == "refusing to start: unusable state directory"
    assert str(state) in record["TURRET_REASON"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write whatever the mode bits say")
def test_cli_serve_refuses_a_state_dir_it_cannot_write(tmp_path: Path, creds_dir: Path) -> None:
    (creds_dir / "bot-token").write_text("x")
    config = tmp_path / "turret.yaml"
    config.write_text('listen: ["127.0.0.1:1"]\n' + GOOD)
    state = tmp_path / "state"
    state.mkdir(mode=0o500)
    result = turret(
        "serve", "--config", str(config), "--credentials-dir", str(creds_dir),
        "--audit-file", str(tmp_path / "a.jsonl"), "--state-dir", str(state),
    )  # fmt: skip
    assert result.returncode == 78
    assert f"state directory {state} is not writable" in result.stderr
