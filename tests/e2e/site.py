"""The e2e site: a booted machine with Turret installed as the README says, and what tests do
with it (requests from the container's network namespace, the admin CLI, the state store).

`tests/e2e/conftest.py` boots one machine per test module (the `site` fixture) from a root
filesystem and venv built once per session; a module that needs its own configuration writes it
with `Site.write_config_text` and restarts the service.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tests.e2e.nspawn_machine import (
    REPO,
    VENV_IN_MACHINE,
    Machine,
)

HERE = Path(__file__).resolve().parent
CANARY_GITEA = f"canary-gitea-{secrets.token_hex(8)}"
CANARY_VAULT = f"canary-vault-{secrets.token_hex(8)}"
CANARY_AGENT = f"canary-agent-{secrets.token_hex(8)}"
CANARIES = (CANARY_GITEA, CANARY_VAULT, CANARY_AGENT)
TCP = "127.0.0.1:8421"  # from turret.socket
UNIX = "/run/turret/agents.sock"
ADMIN = "/run/turret/admin.sock"  # from turret-admin.socket
STATE = "/var/lib/private/turret"  # StateDirectory=turret under DynamicUser=
DROP_IN = """[Service]
# A short watchdog, so that a few periods pass within the test.
WatchdogSec=2
LoadCredential=gitea-token:/etc/turret/credentials/gitea-token
LoadCredentialEncrypted=vault-key:/etc/turret/credentials/vault-key.cred
"""
WRAPPER = f'#!/bin/sh\nexec {VENV_IN_MACHINE}/bin/python -m turret "$@"\n'


@dataclass
class Site:
    """The booted machine with Turret installed, and the fake upstream's port."""

    machine: Machine
    etc: Path  # /etc/turret, bind-mounted read-write from the host
    upstream_port: int = 0

    def write_config(
        self, grants: tuple[str, ...] = ("/ping", "/slow"), broken: bool = False
    ) -> None:
        paths = ", ".join(f'"{g}"' for g in grants)
        digest = hashlib.sha256(CANARY_AGENT.encode()).hexdigest()
        url = f"http://127.0.0.1:{self.upstream_port}"
        text = (
            f"services:\n"
            f"  gitea:\n    url: {url}\n    auth: {{bearer: gitea-token}}\n"
            f"  vault:\n    url: {url}\n"
            f"    auth: {{header: {{name: X-Api-Key, value: vault-key}}}}\n"
            f"agents:\n  e2e-agent:\n    token_sha256: {digest}\n    proxy:\n"
            f"      - {{service: gitea, methods: [GET], paths: [{paths}]}}\n"
            f'      - {{service: vault, methods: [GET], paths: ["/ping"]}}\n'
        )
        if broken:
            text += "    tokens: 3\n"
        self.write_config_text(text)

    def write_config_text(self, text: str) -> None:
        """Put `text` at /etc/turret/turret.yaml (reload or restart the service to apply it)."""
        path = self.etc / "turret.yaml"
        path.unlink(missing_ok=True)  # it may be a FIFO
        path.write_text(text)

    def http(
        self, target: str, method: str, path: str, *, agent: bool = True
    ) -> subprocess.Popen[str]:
        env = {"PATH": os.environ["PATH"], **({"E2E_TOKEN": CANARY_AGENT} if agent else {})}
        if target.startswith("/"):
            target = str(self.machine.path(target))  # the socket file, seen from the host
        return self.machine.in_network(
            [sys.executable, "-I", str(HERE / "http_get.py"), target, method, path],
            env=env,
            stdout=subprocess.PIPE,
        )

    def request(
        self, target: str, path: str, method: str = "GET", *, agent: bool = True
    ) -> dict[str, object]:
        return answer(self.http(target, method, path, agent=agent))

    def upstream(self, method: str, path: str) -> dict[str, object]:
        return self.request(f"127.0.0.1:{self.upstream_port}", path, method, agent=False)

    def show(self, *props: str) -> dict[str, str]:
        return self.machine.show("turret.service", *props)

    def stop_service(self) -> None:
        """turret.service stopped, turret.socket listening, the standard config in place."""
        self.machine.run("systemctl", "stop", "turret.service")
        self.machine.run("systemctl", "reset-failed", "turret.service", check=False)
        self.write_config()
        assert self.show("ActiveState")["ActiveState"] == "inactive"
        assert self.machine.show("turret.socket", "ActiveState")["ActiveState"] == "active"


def answer(proc: subprocess.Popen[str]) -> dict[str, object]:
    out, _ = proc.communicate(timeout=90)
    for canary in CANARIES:
        assert canary not in out
    result: dict[str, object] = json.loads(out)
    return result


def reap(proc: subprocess.Popen[str]) -> None:
    """Kill `proc` if it still runs and collect it (closing its pipes)."""
    if proc.returncode is None:
        proc.kill()
        proc.communicate()


def ok(result: dict[str, object], credential: str) -> None:
    assert result.get("status") == 200, result
    assert result["body"] == {"credential": credential}, result


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.05)


def start_upstream(machine: Machine) -> subprocess.Popen[str]:
    env = {"PATH": os.environ["PATH"], "E2E_GITEA": CANARY_GITEA, "E2E_VAULT": CANARY_VAULT}
    return machine.in_network(
        [sys.executable, str(HERE / "fake_upstream.py")], env=env, stdout=subprocess.PIPE
    )


def install(s: Site) -> None:
    """Install Turret as the README tells an admin to, with the e2e drop-in on top."""
    m = s.machine
    wrapper = m.path("/usr/local/bin/turret")
    wrapper.write_text(WRAPPER)
    wrapper.chmod(0o755)
    units = REPO / "systemd"
    for unit in ("turret.service", "turret.socket", "turret-admin.socket"):
        shutil.copy(units / unit, m.path(f"/etc/systemd/system/{unit}"))
    m.path("/etc/sysusers.d").mkdir(exist_ok=True)
    shutil.copy(units / "turret.sysusers", m.path("/etc/sysusers.d/turret.conf"))
    m.path("/etc/systemd/system/turret.service.d").mkdir()
    m.path("/etc/systemd/system/turret.service.d/e2e.conf").write_text(DROP_IN)

    token = s.etc / "credentials" / "gitea-token"
    token.write_text(CANARY_GITEA)
    token.chmod(0o400)
    m.run(
        "systemd-creds", "encrypt", "--name=vault-key", "-",
        "/etc/turret/credentials/vault-key.cred", stdin=CANARY_VAULT,
    )  # fmt: skip
    s.write_config()
    m.run("systemd-sysusers")
    m.run("systemctl", "daemon-reload")
    verify = m.run(
        "systemd-analyze", "verify", "--man=no",
        "/etc/systemd/system/turret.service", "/etc/systemd/system/turret.socket",
        "/etc/systemd/system/turret-admin.socket",
    )  # fmt: skip
    assert (verify.stdout, verify.stderr) == ("", "")
    m.run("systemctl", "start", "turret.socket", "turret-admin.socket")


def service_uid(site: Site) -> int:
    pid = site.show("MainPID")["MainPID"]
    status = site.machine.path(f"/proc/{pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1])


def state_files(site: Site, uid: int) -> dict[str, bytes]:
    """The state directory's files by name, each checked to be 0600 and owned by `uid`."""
    state = site.machine.path(STATE)
    assert (state.stat().st_mode & 0o777, state.stat().st_uid) == (0o700, uid)
    files = {}
    for path in state.iterdir():
        info = path.lstat()
        assert (oct(info.st_mode), info.st_uid) == ("0o100600", uid), path.name
        files[path.name] = path.read_bytes()
    return files


def in_store(site: Site, statement: str) -> str:
    """Run `statement` with the state store open, as root inside the machine (Turret stopped)."""
    script = (
        "from turret.state import StateStore\n"
        f"store = StateStore.open(__import__('pathlib').Path({STATE!r}))\n"
        f"{statement}\nstore.close()\n"
    )
    return site.machine.run(f"{VENV_IN_MACHINE}/bin/python", "-c", script).stdout


def turret(site: Site, *args: str, user: int | None = None) -> subprocess.CompletedProcess[str]:
    """`turret ARGS` inside the machine, as root (the operator) or as `user`."""
    as_user = [] if user is None else ["setpriv", f"--reuid={user}", f"--regid={user}",
                                       "--clear-groups"]  # fmt: skip
    result = site.machine.run(*as_user, "/usr/local/bin/turret", *args, check=False)
    for canary in CANARIES:
        assert canary not in result.stdout + result.stderr
    return result

