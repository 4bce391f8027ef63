"""Turret's units under a real systemd 252 booted as PID 1 in an nspawn container.

The shipped turret.socket, turret-admin.socket, turret.service and sysusers file are installed as
an admin would,
plus a drop-in with the credentials (as the README says) and a short watchdog. Requests come from
the container's own network namespace; the upstream is a fake on the container's loopback.
Locally the root filesystem and venv are cached (TURRET_E2E_CACHE, default ~/.cache/turret-e2e);
under CI (CI set) both are built from scratch and removed afterwards.
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
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.nspawn_machine import (
    REPO,
    SRC_IN_MACHINE,
    VENV_IN_MACHINE,
    Machine,
    booted,
    log,
    missing_prerequisites,
    rootfs,
    venv,
)

pytestmark = pytest.mark.timeout(1500)  # a fresh machine runs debootstrap and pip first

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


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    missing = missing_prerequisites()
    if missing:
        message = "cannot boot a systemd container here; missing: " + ", ".join(missing)
        if os.environ.get("CI"):
            pytest.fail(message)  # CI must run this test, never skip it
        pytest.skip(message)
    fresh = bool(os.environ.get("CI"))
    default_cache = Path.home() / ".cache" / "turret-e2e"
    cache = (
        tmp_path_factory.mktemp("e2e-build")
        if fresh
        else Path(os.environ.get("TURRET_E2E_CACHE", default_cache))
    )
    started = time.monotonic()
    root, env = rootfs(cache), venv(cache)
    log(f"root filesystem and venv ready after {time.monotonic() - started:.1f} s ({cache})")
    run = tmp_path_factory.mktemp("e2e-run")
    etc = run / "etc-turret"
    (etc / "credentials").mkdir(parents=True)
    binds = [
        (env, VENV_IN_MACHINE, True),
        (REPO / "turret", f"{SRC_IN_MACHINE}/turret", True),
        (etc, "/etc/turret", False),
    ]
    try:
        with booted(f"turret-e2e-{os.getpid()}", root, binds, run / "console.log") as machine:
            log(f"booted after {time.monotonic() - started:.1f} s")
            s = Site(machine, etc)
            upstream = start_upstream(machine)
            try:
                s.upstream_port = int(upstream.stdout.readline()) if upstream.stdout else 0
                install(s)
                yield s
                journal = machine.run("journalctl", "--no-pager", "-o", "json").stdout
                for canary in CANARIES:
                    assert canary not in journal
            finally:
                upstream.kill()
                upstream.communicate()
    finally:
        if fresh:
            shutil.rmtree(cache, ignore_errors=True)
        log(f"done after {time.monotonic() - started:.1f} s")


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


def test_e2e_socket_activation_on_tcp_and_on_unix(site: Site) -> None:
    for target in (TCP, UNIX):
        site.stop_service()
        ok(site.request(target, "/v1/proxy/gitea/ping"), "gitea")  # the first connection
        assert site.show("ActiveState")["ActiveState"] == "active"
    mode = site.machine.run("stat", "-c", "%a %U %G", UNIX).stdout.split()
    assert mode == ["660", "root", "turret-agents"]


def test_e2e_dynamic_user_and_credentials(site: Site) -> None:
    site.stop_service()
    ok(site.request(TCP, "/v1/proxy/gitea/ping"), "gitea")  # LoadCredential=
    ok(site.request(UNIX, "/v1/proxy/vault/ping"), "vault")  # LoadCredentialEncrypted=
    uid = service_uid(site)
    assert 61184 <= uid <= 65519, uid  # systemd's range for dynamic users
    user = site.machine.run("getent", "passwd", str(uid)).stdout
    assert user.startswith("turret:")


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


def test_e2e_state_store_private_to_the_dynamic_user_and_kept_across_restart(
    site: Site,
) -> None:
    site.stop_service()
    ok(site.request(TCP, "/v1/proxy/gitea/ping"), "gitea")
    ok(site.request(UNIX, "/v1/proxy/vault/ping"), "vault")
    uid = service_uid(site)
    running = state_files(site, uid)
    assert {"turret.db", "turret.db-wal", "turret.db-shm", "fingerprint.key"} <= set(running)

    # Something written to the store while Turret is stopped is there after two starts.
    site.machine.run("systemctl", "stop", "turret.service")
    in_store(site, 'store.meta.set("e2e-mark", "kept", at=0)')
    ok(site.request(TCP, "/v1/proxy/gitea/ping"), "gitea")
    site.machine.run("systemctl", "restart", "turret.service")
    ok(site.request(UNIX, "/v1/proxy/gitea/ping"), "gitea")
    uid = service_uid(site)  # systemd keeps the directory's owner as the dynamic user's uid
    after = state_files(site, uid)
    assert after["fingerprint.key"] == running["fingerprint.key"]
    for name, data in {**running, **after}.items():
        for canary in CANARIES:
            assert canary.encode() not in data, name
    site.machine.run("systemctl", "stop", "turret.service")
    assert in_store(site, 'print(store.meta.get("e2e-mark"))') == "kept\n"
    # The test's own opening as root changed no owner, so the next start can open the files.
    assert all(p.lstat().st_uid == uid for p in site.machine.path(STATE).iterdir())


def in_store(site: Site, statement: str) -> str:
    """Run `statement` with the state store open, as root inside the machine (Turret stopped)."""
    script = (
        "from turret.state import StateStore\n"
        f"store = StateStore.open(__import__('pathlib').Path({STATE!r}))\n"
        f"{statement}\nstore.close()\n"
    )
    return site.machine.run(f"{VENV_IN_MACHINE}/bin/python", "-c", script).stdout


def test_e2e_start_returns_after_ready_and_watchdog_holds(site: Site) -> None:
    site.stop_service()
    # The config is a FIFO: Turret blocks reading it until the test writes, so READY=1 cannot
    # come before that, and neither may the return of `systemctl start`.
    config = site.etc / "turret.yaml"
    text = config.read_text()
    config.unlink()
    os.mkfifo(config, 0o644)
    start = site.machine.start("systemctl", "start", "turret.service")
    try:
        wait_until(lambda: site.show("ActiveState")["ActiveState"] == "activating", "activating")
        assert start.poll() is None
        with config.open("w") as fifo:
            fifo.write(text)
        _, err = start.communicate(timeout=60)
        assert start.returncode == 0, err
    finally:
        reap(start)
        site.write_config()
    props = site.show("ActiveState", "SubState", "StatusText", "MainPID")
    assert (props["ActiveState"], props["SubState"]) == ("active", "running")
    assert props["StatusText"].startswith("1 agents, 2 services; 0 requests served")

    first_ping = int(site.show("WatchdogTimestampMonotonic")["WatchdogTimestampMonotonic"])
    time.sleep(6.5)  # an observation period of three watchdog periods, not a synchronisation
    after = site.show("ActiveState", "NRestarts", "MainPID", "WatchdogTimestampMonotonic")
    assert (after["ActiveState"], after["NRestarts"], after["MainPID"]) == (
        "active",
        "0",
        props["MainPID"],
    )
    assert int(after["WatchdogTimestampMonotonic"]) > first_ping


def test_e2e_audit_records_in_the_journal(site: Site) -> None:
    site.stop_service()
    ok(site.request(TCP, "/v1/proxy/gitea/ping"), "gitea")
    denied = site.request(TCP, "/v1/proxy/gitea/admin")
    assert denied.get("status") == 403, denied
    records = site.machine.journal("TURRET_AGENT=e2e-agent")
    assert {r["_SYSTEMD_UNIT"] for r in records} == {"turret.service"}
    kinds = {(r["TURRET_EVENT"], r.get("TURRET_DECISION"), r["TURRET_PATH"]) for r in records}
    assert {("decision", "allow", "/ping"), ("outcome", None, "/ping")} <= kinds
    assert ("decision", "deny", "/admin") in kinds


def test_e2e_reload_applies_config_and_survives_a_broken_one(site: Site) -> None:
    site.stop_service()
    ok(site.request(TCP, "/v1/proxy/gitea/ping"), "gitea")
    pid = site.show("MainPID")["MainPID"]
    assert site.request(TCP, "/v1/proxy/gitea/other").get("status") == 403

    site.write_config(grants=("/ping", "/slow", "/other"))
    site.machine.run("systemctl", "reload", "turret.service")
    # With Type=notify + ExecReload= (systemd 252), `reload` returns once SIGHUP is sent.
    wait_until(lambda: "last reload: ok" in site.show("StatusText")["StatusText"], "reloaded")
    ok(site.request(TCP, "/v1/proxy/gitea/other"), "gitea")

    site.write_config(grants=("/ping",), broken=True)
    site.machine.run("systemctl", "reload", "turret.service")
    wait_until(lambda: "FAILED" in site.show("StatusText")["StatusText"], "reload failed")
    status = site.machine.run(
        "systemctl", "status", "--no-pager", "--full", "turret.service", check=False
    )
    assert "last reload: FAILED" in status.stdout
    assert "still serving the previous one" in status.stdout
    ok(site.request(UNIX, "/v1/proxy/gitea/other"), "gitea")  # the previous config still serves
    assert site.show("MainPID", "ActiveState") == {"MainPID": pid, "ActiveState": "active"}
    failed = site.machine.journal("_SYSTEMD_UNIT=turret.service", "TURRET_EVENT=reload_failed")
    assert failed
    assert "agents.e2e-agent.tokens" in str(failed[-1]["TURRET_REASON"])


def test_e2e_stop_lets_the_request_in_flight_finish(site: Site) -> None:
    site.stop_service()
    slow = site.http(UNIX, "GET", "/v1/proxy/gitea/slow")
    wait_until(
        lambda: site.upstream("GET", "/control/state")["body"] == {"entered": True},
        "slow request at upstream",
    )
    stop = site.machine.start("systemctl", "stop", "turret.service")
    try:
        wait_until(lambda: site.show("ActiveState")["ActiveState"] == "deactivating", "stopping")
        assert stop.poll() is None
        assert site.upstream("POST", "/control/release")["body"] == {"released": True}
        result = answer(slow)
        assert result.get("status") == 200, result
        assert result["body"] == {"credential": "gitea", "slow": True}
        _, err = stop.communicate(timeout=60)
        assert stop.returncode == 0, err
    finally:
        reap(stop)
    props = site.show("ActiveState", "Result", "ExecMainStatus")
    assert props == {"ActiveState": "inactive", "Result": "success", "ExecMainStatus": "0"}


def turret(site: Site, *args: str, user: int | None = None) -> subprocess.CompletedProcess[str]:
    """`turret ARGS` inside the machine, as root (the operator) or as `user`."""
    as_user = [] if user is None else ["setpriv", f"--reuid={user}", f"--regid={user}",
                                       "--clear-groups"]  # fmt: skip
    result = site.machine.run(*as_user, "/usr/local/bin/turret", *args, check=False)
    for canary in CANARIES:
        assert canary not in result.stdout + result.stderr
    return result


def test_e2e_admin_socket_root_only_and_other_users_refused(site: Site) -> None:
    site.stop_service()
    mode = site.machine.run("stat", "-c", "%a %U %G", ADMIN).stdout.split()
    assert mode == ["600", "root", "root"]
    status = turret(site, "status", "--json")  # the first connection starts Turret
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["agents"] == {"count": 1, "revoked": []}
    refused = turret(site, "status", user=65534)  # the mode keeps nobody out
    assert refused.returncode == 69 and "Permission denied" in refused.stderr
    # With the mode opened by mistake, the SO_PEERCRED check still closes the connection.
    site.machine.run("chmod", "0666", ADMIN)
    try:
        refused = turret(site, "killswitch", user=65534)
        assert refused.returncode == 69 and "closed the connection" in refused.stderr
    finally:
        site.machine.run("chmod", "0600", ADMIN)
    assert json.loads(turret(site, "status", "--json").stdout)["sealed"] is None
    (record,) = site.machine.journal("TURRET_EVENT=admin_refused")
    assert record["TURRET_OPERATOR_UID"] == "65534"


def test_e2e_revoke_takes_effect_and_survives_restart(site: Site) -> None:
    site.stop_service()
    ok(site.request(TCP, "/v1/proxy/gitea/ping"), "gitea")
    started = time.monotonic()
    assert turret(site, "revoke", "e2e-agent", "--reason", "e2e").returncode == 0
    refused = site.request(UNIX, "/v1/proxy/gitea/ping")
    log(f"turret revoke to the first refused request: {time.monotonic() - started:.3f} s")
    assert refused.get("status") == 401, refused
    site.machine.run("systemctl", "restart", "turret.service")
    refused = site.request(TCP, "/v1/proxy/gitea/ping")
    assert refused.get("status") == 401 and "revoked" in str(refused["body"]), refused
    agents = json.loads(turret(site, "agents", "--json").stdout)["agents"]
    assert agents[0]["revoked"]["by"] == "uid:0"  # the operator's uid, from the kernel
    assert turret(site, "unrevoke", "e2e-agent").returncode == 0
    ok(site.request(TCP, "/v1/proxy/gitea/ping"), "gitea")
    (action, _) = site.machine.journal("TURRET_EVENT=admin_action")[-2:]
    assert action["TURRET_ACTION"] == "revoke e2e-agent" and action["TURRET_OPERATOR_UID"] == "0"


def test_e2e_killswitch_seals_every_listener_and_survives_restart(site: Site) -> None:
    site.stop_service()
    killed = turret(site, "killswitch", "--reason", "e2e incident")
    assert killed.returncode == 0, killed.stderr
    for target in (TCP, UNIX):
        sealed = site.request(target, "/v1/proxy/gitea/ping")
        assert sealed.get("status") == 503 and "sealed" in str(sealed["body"]), sealed
    site.machine.run("systemctl", "restart", "turret.service")
    for target in (TCP, UNIX):
        assert site.request(target, "/v1/proxy/gitea/ping").get("status") == 503
    status = turret(site, "status")
    assert "sealed: since" in status.stdout and "e2e incident" in status.stdout
    assert turret(site, "unseal").returncode == 0
    ok(site.request(UNIX, "/v1/proxy/gitea/ping"), "gitea")
