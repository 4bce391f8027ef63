"""Operations under a real systemd: `/metrics` scraped over the real admin socket (by the
`turret metrics` CLI, as root; refused to another user), the textfile for node_exporter, the
metric moving after a request, and the dead-man switch sealing Turret with STATUS= saying why."""

from __future__ import annotations

import json
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.nspawn_machine import log
from tests.e2e.site import TCP, UNIX, Site, ok, turret, wait_until

pytestmark = pytest.mark.timeout(1500)  # a fresh machine runs debootstrap and pip first
ALLOWED = {"agent": "e2e-agent", "service": "gitea", "capability": "-", "decision": "allow"}


def requests_allowed(text: str) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "turret_requests_total" and sample.labels == ALLOWED:
                return sample.value
    return 0.0


def test_e2e_metrics_over_the_admin_socket_move_after_a_request(site: Site) -> None:
    site.stop_service()
    ok(site.request(TCP, "/v1/proxy/gitea/ping"), "gitea")
    first = turret(site, "metrics")
    assert first.returncode == 0, first.stderr
    before = requests_allowed(first.stdout)
    assert before >= 1
    ok(site.request(UNIX, "/v1/proxy/gitea/ping"), "gitea")
    after = turret(site, "metrics")
    assert requests_allowed(after.stdout) == before + 1
    assert "turret_sealed 0.0" in after.stdout and "turret_state_store 1.0" in after.stdout
    refused = turret(site, "metrics", user=65534)  # the admin socket is root's
    assert refused.returncode == 69 and "turret_" not in refused.stdout
    for target in (TCP, UNIX):  # the agents' listeners never serve it
        answer = site.request(target, "/metrics")
        assert answer.get("status") == 404, answer


def test_e2e_metrics_textfile_for_node_exporter(site: Site) -> None:
    site.stop_service()
    ok(site.request(TCP, "/v1/proxy/gitea/ping"), "gitea")
    site.machine.run("mkdir", "-p", "/var/lib/node-exporter")
    written = turret(site, "metrics", "--textfile", "/var/lib/node-exporter/turret.prom")
    assert written.returncode == 0 and written.stdout == "", written.stderr
    path = site.machine.path("/var/lib/node-exporter/turret.prom")
    assert oct(path.stat().st_mode & 0o777) == "0o644"
    assert requests_allowed(path.read_text()) >= 1
    assert [p.name for p in path.parent.iterdir()] == ["turret.prom"]


def test_e2e_heartbeat_seals_and_status_says_why(site: Site) -> None:
    site.stop_service()
    config = site.etc / "turret.yaml"
    url = f"http://127.0.0.1:{site.upstream_port}/missing"  # answers 404: a missed beat
    site.write_config_text(
        config.read_text() + f"heartbeat: {{url: '{url}', interval: 1, timeout: 1, misses: 2}}\n"
    )
    started = time.monotonic()
    site.machine.run("systemctl", "start", "turret.service")
    try:
        wait_until(
            lambda: "dead-man switch fired" in site.show("StatusText")["StatusText"],
            "STATUS= says the switch fired",
        )
        log(f"heartbeat (1 s, 2 misses) start to seal: {time.monotonic() - started:.2f} s")
        sealed = site.request(TCP, "/v1/proxy/gitea/ping")
        assert sealed.get("status") == 503 and "sealed" in str(sealed["body"]), sealed
        (record,) = site.machine.journal("TURRET_EVENT=heartbeat_failed")
        assert record["PRIORITY"] == "2" and record["TURRET_ACTION"] == "seal"
        assert "HTTP 404" in str(record["TURRET_REASON"]) and url not in json.dumps(record)
        status = json.loads(turret(site, "status", "--json").stdout)
        assert status["sealed"]["by"] == "heartbeat"
    finally:
        site.stop_service()  # the standard config again (without the heartbeat)
        site.machine.run("systemctl", "start", "turret.service")
        assert turret(site, "unseal").returncode == 0
    ok(site.request(UNIX, "/v1/proxy/gitea/ping"), "gitea")
