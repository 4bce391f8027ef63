"""The NixOS module's operations options: the metrics textfile (its timer and service) and the
checks of `settings.heartbeat` and `settings.checkin`, each failure naming the option path."""

from __future__ import annotations

import pytest

from tests.nix.nixtools import ModuleEval
from tests.nix.test_nix_module import SETTINGS, failed_assertions, host, rendered_config

TEXTFILE = "/var/lib/prometheus-node-exporter-text-files/turret.prom"


def with_settings(extra: str) -> str:
    return host(settings=SETTINGS.rstrip().removesuffix("}") + f" {extra} }}")


def test_module_metrics_textfile_gets_a_timer_and_a_sandboxed_service(
    evaluate: ModuleEval,
) -> None:
    source = host(extra=f'metrics.textfile = "{TEXTFILE}"; metrics.interval = "30s";')
    assert evaluate("host.checks", source)["failedAssertions"] == []
    system = evaluate("host.system", source)
    service = system["services"]["turret-metrics"]["serviceConfig"]
    assert service["ExecStart"].endswith(f"/bin/turret metrics --textfile {TEXTFILE}")
    assert service["Type"] == "oneshot" and service["RestrictAddressFamilies"] == "AF_UNIX"
    assert service["ReadWritePaths"] == ["/var/lib/prometheus-node-exporter-text-files"]
    assert service["PrivateNetwork"] is True and service["ProtectSystem"] == "strict"
    timer = system["timers"]["turret-metrics"]
    assert timer["wantedBy"] == ["timers.target"]
    assert timer["timerConfig"]["OnUnitActiveSec"] == "30s"
    assert "d /var/lib/prometheus-node-exporter-text-files 0755 root root -" in system["tmpfiles"]


def test_module_without_a_textfile_has_no_metrics_units(evaluate: ModuleEval) -> None:
    system = evaluate("host.system", host())
    assert "turret-metrics" not in system["services"] and system["timers"] == {}


@pytest.mark.parametrize(
    "path",
    ["turret.prom", "relative/turret.prom", "/var/lib/metrics/turret.txt", "/nix/store/x.prom"],
)
def test_module_rejects_a_textfile_node_exporter_would_not_read(
    evaluate: ModuleEval, path: str
) -> None:
    messages = failed_assertions(evaluate, host(extra=f'metrics.textfile = "{path}";'))
    assert any(m.startswith("services.turret.metrics.textfile") for m in messages), messages


def test_module_renders_heartbeat_and_checkin(evaluate: ModuleEval) -> None:
    source = with_settings(
        'heartbeat = { url = "https://hc-ping.com/x"; interval = 60; misses = 3;'
        ' on_failure = "revoke_derived"; }; checkin = { max_interval = "24h"; };'
    )
    assert evaluate("host.checks", source)["failedAssertions"] == []
    config = rendered_config(evaluate("host.system", source))
    assert config["heartbeat"]["on_failure"] == "revoke_derived"
    assert config["checkin"] == {"max_interval": "24h"}


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ('heartbeat = "https://x";', "services.turret.settings.heartbeat must be an attribute set"),
        ("heartbeat = { interval = 60; };", "services.turret.settings.heartbeat.url must be set"),
        ('heartbeat.url = "ftp://x";', "services.turret.settings.heartbeat.url must be an http"),
        (
            'heartbeat = { url = "https://x"; interval = "soon"; };',
            "services.turret.settings.heartbeat.interval must be seconds or a duration",
        ),
        (
            'heartbeat = { url = "https://x"; timeout = 0; };',
            "services.turret.settings.heartbeat.timeout must be seconds or a duration",
        ),
        (
            'heartbeat = { url = "https://x"; misses = 0; };',
            "services.turret.settings.heartbeat.misses must be a whole number",
        ),
        (
            'heartbeat = { url = "https://x"; on_failure = "killswitch"; };',
            'services.turret.settings.heartbeat.on_failure must be "seal" or "revoke_derived"',
        ),
        (
            'checkin.max_interval = "1y";',
            "services.turret.settings.checkin.max_interval must be seconds or a duration",
        ),
        (
            'checkin.on_failure = "nothing";',
            'services.turret.settings.checkin.on_failure must be "seal" or "revoke_derived"',
        ),
    ],
)
def test_module_rejects_bad_heartbeat_and_checkin(
    evaluate: ModuleEval, extra: str, message: str
) -> None:
    messages = failed_assertions(evaluate, with_settings(extra))
    assert any(m.startswith(message) for m in messages), messages
