"""Turret's units under a real systemd 252 booted as PID 1 in an nspawn container.

The shipped turret.socket, turret-admin.socket, turret.service and sysusers file are installed as
an admin would, plus a drop-in with the credentials (as the README says) and a short watchdog
(`tests/e2e/site.py`). Requests come from the container's own network namespace; the upstream is
a fake on the container's loopback. Locally the root filesystem and venv are cached
(TURRET_E2E_CACHE, default ~/.cache/turret-e2e); under CI (CI set) both are built from scratch
and removed afterwards (`tests/e2e/conftest.py`).
"""

from __future__ import annotations

import json
import os
import time

import pytest

from tests.e2e.nspawn_machine import log
from tests.e2e.site import (
    ADMIN,
    CANARIES,
    STATE,
    TCP,
    UNIX,
    Site,
    answer,
    in_store,
    ok,
    reap,
    service_uid,
    state_files,
    turret,
    wait_until,
)

pytestmark = pytest.mark.timeout(1500)  # a fresh machine runs debootstrap and pip first


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
