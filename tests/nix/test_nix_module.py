"""The NixOS module evaluated with nixpkgs' lib: options, rendered config, credentials, units."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.nix.nixtools import (
    REPO,
    ModuleEval,
    exposure,
    render_service,
    render_socket,
    run_config_build,
    unit_hardening,
)
from turret.config import load_config

SETTINGS = """{
    services.forge = {
      url = "http://127.0.0.1:3000";
      auth.bearer = "gitea-token";
      timeout = 5;
    };
    agents.alice = {
      token_credential = "alice-token";
      proxy = [
        { service = "forge"; methods = [ "GET" "POST" ]; paths = [ "/api/v1/repos/acme/**" ]; }
      ];
    };
    agents.ci.token_sha256 = "%s";
  }""" % ("ab" * 32)

CREDENTIALS = """{
    "gitea-token" = config.sops.secrets."turret/gitea-token".path;
    "alice-token" = config.sops.secrets."turret/alice-token".path;
  }"""

HOST = """{ config, ... }:
{
  services.turret = {
    enable = true;
    settings = @SETTINGS@;
    credentials = @CREDENTIALS@;
    @EXTRA@
  };
  sops.secrets."turret/gitea-token".restartUnits = [ "turret.service" ];
  sops.secrets."turret/alice-token".restartUnits = [ "turret.service" ];
}
"""

LOAD_CREDENTIAL = [
    "alice-token:/run/secrets/turret/alice-token",
    "gitea-token:/run/secrets/turret/gitea-token",
]


def host(settings: str = SETTINGS, credentials: str = CREDENTIALS, extra: str = "") -> str:
    """A host configuration module enabling Turret, with sops-nix-style secret paths."""
    return (
        HOST.replace("@SETTINGS@", settings)
        .replace("@CREDENTIALS@", credentials)
        .replace("@EXTRA@", extra)
    )


def rendered_config(system: dict[str, Any]) -> Any:
    return json.loads(system["configBuild"]["unchecked"]["value"])


def failed_assertions(evaluate: ModuleEval, source: str) -> list[str]:
    messages: list[str] = evaluate("host.checks", source)["failedAssertions"]
    return messages


def test_module_declares_its_options(evaluate: ModuleEval) -> None:
    options = evaluate("host.options", host())
    assert set(options["top"]) == {
        "enable",
        "package",
        "settings",
        "credentials",
        "socketUser",
        "socketGroup",
        "socketMode",
        "checkConfig",
        "credentialPolicy",
    }  # and admin.allowUids, admin.allowGroup (a set of options, tested below)
    assert set(options["settings"]) == {"listen", "services", "agents"}
    for option in [*options["top"].values(), *options["settings"].values()]:
        assert option["description"]
    assert "path" in options["top"]["credentials"]["type"]
    assert "submodule" in options["top"]["settings"]["type"]


def test_module_renders_settings_to_the_config(evaluate: ModuleEval) -> None:
    system = evaluate("host.system", host())
    assert rendered_config(system) == {
        "listen": ["127.0.0.1:8421", "unix:/run/turret/agents.sock"],
        "services": {
            "forge": {
                "url": "http://127.0.0.1:3000",
                "auth": {"bearer": "gitea-token"},
                "timeout": 5,
            }
        },
        "agents": {
            "alice": {
                "token_credential": "alice-token",
                "proxy": [
                    {
                        "service": "forge",
                        "methods": ["GET", "POST"],
                        "paths": ["/api/v1/repos/acme/**"],
                    }
                ],
            },
            # Unset typed options (token_credential = null) are left out, not written as null.
            "ci": {"token_sha256": "ab" * 32, "proxy": []},
        },
    }
    assert system["etc"]["turret/turret.yaml"]["source"].endswith("-turret.yaml")


def test_module_passes_unknown_keys_through(evaluate: ModuleEval) -> None:
    settings = """{
    rate_limits.default = { requests = 10; per_seconds = 60; };
    services.forge = {
      url = "https://git.example.com";
      auth.bearer = "gitea-token";
      kind = "forgejo";
    };
    agents.alice = {
      token_credential = "alice-token";
      capabilities = [ "issues.read" ];
      proxy = [ { service = "forge"; methods = [ "GET" ]; paths = [ "/**" ]; note = "x"; } ];
    };
  }"""
    config = rendered_config(evaluate("host.system", host(settings)))
    assert config["rate_limits"] == {"default": {"requests": 10, "per_seconds": 60}}
    assert config["services"]["forge"]["kind"] == "forgejo"
    assert config["agents"]["alice"]["capabilities"] == ["issues.read"]
    assert config["agents"]["alice"]["proxy"][0]["note"] == "x"


def test_module_checks_the_config_at_build_time(
    evaluate: ModuleEval, tools_dir: Path, tmp_path: Path
) -> None:
    build = evaluate("host.system", host())["configBuild"]
    assert build["nativeBuildInputs"] == [str(tools_dir)]  # the package under test
    result, out = run_config_build(build, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "OK (1 services, 2 agents)" in result.stdout
    assert yaml.safe_load(out.read_text()) == json.loads(build["unchecked"]["value"])


def test_module_build_fails_on_a_config_turret_refuses(
    evaluate: ModuleEval, tmp_path: Path
) -> None:
    settings = SETTINGS.replace('"http://127.0.0.1:3000"', '"ftp://127.0.0.1"')
    build = evaluate("host.system", host(settings))["configBuild"]
    result, _ = run_config_build(build, tmp_path)
    assert result.returncode != 0
    assert "services.forge.url" in result.stderr
    assert "scheme must be http or https" in result.stderr


def test_module_loads_credentials_from_sops_paths(evaluate: ModuleEval) -> None:
    system = evaluate("host.system", host())
    service = system["services"]["turret"]
    assert service["serviceConfig"]["LoadCredential"] == LOAD_CREDENTIAL
    assert service["restartTriggers"] == LOAD_CREDENTIAL
    assert service["environment"] == {}
    assert not any(k.startswith(("Environment", "SetCredential")) for k in service["serviceConfig"])
    for name in ("turret/gitea-token", "turret/alice-token"):
        secret = system["sopsSecrets"][name]
        # The module leaves the secret as sops-nix makes it: root-owned and 0400.
        assert (secret["owner"], secret["group"], secret["mode"]) == ("root", "root", "0400")
        assert secret["restartUnits"] == ["turret.service"]


def test_module_accepts_a_valid_host_without_warnings(evaluate: ModuleEval) -> None:
    assert evaluate("host.checks", host()) == {"failedAssertions": [], "warnings": []}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ('"/nix/store/0a1b2c3d4e5f6g7h8i9j0k1l2m3n4o5p-gitea-token"', "is in the Nix store"),
        ("./gitea-token", "is a Nix path"),
    ],
)
def test_module_rejects_a_credential_in_the_store(
    evaluate: ModuleEval, value: str, expected: str
) -> None:
    credentials = CREDENTIALS.replace('config.sops.secrets."turret/gitea-token".path', value)
    messages = failed_assertions(evaluate, host(credentials=credentials))
    assert len(messages) == 1, messages
    assert messages[0].startswith("services.turret.credentials.gitea-token ")
    assert expected in messages[0]


def test_module_rejects_a_grant_for_an_unknown_service(evaluate: ModuleEval) -> None:
    settings = SETTINGS.replace('service = "forge"', 'service = "gitlab"')
    messages = failed_assertions(evaluate, host(settings))
    assert messages == [
        'services.turret.settings.agents.alice.proxy[0].service names the service "gitlab", '
        "which services.turret.settings.services does not define (defined: forge)."
    ]


def test_module_rejects_a_credential_nobody_provides(evaluate: ModuleEval) -> None:
    credentials = '{ "alice-token" = "/run/secrets/turret/alice-token"; }'
    messages = failed_assertions(evaluate, host(credentials=credentials))
    assert messages == [
        'services.turret.settings.services.forge.auth.bearer names the credential "gitea-token",'
        " which services.turret.credentials does not provide (provided: alice-token)."
    ]


@pytest.mark.parametrize(
    ("change", "option"),
    [
        (
            'services.qbit = { url = "http://127.0.0.1:8080"; kind = "qbittorrent"; '
            'auth.login = { username = "admin"; password.credential = "qbit-password"; }; };',
            "services.turret.settings.services.qbit.auth.login.password.credential",
        ),
        ('audit.params_key = "qbit-password";', "services.turret.settings.audit.params_key"),
        ('audit.chain_key = "qbit-password";', "services.turret.settings.audit.chain_key"),
    ],
)
def test_module_finds_login_and_audit_credentials(
    evaluate: ModuleEval, change: str, option: str
) -> None:
    settings = SETTINGS[: SETTINGS.rindex("}")] + change + "}"
    messages = failed_assertions(evaluate, host(settings))
    assert messages == [
        f'{option} names the credential "qbit-password", which services.turret.credentials '
        "does not provide (provided: alice-token, gitea-token)."
    ]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            'agents.ci.token_credential = "alice-token";',
            "services.turret.settings.agents.ci needs exactly one of token_sha256 and "
            "token_credential.",
        ),
        (
            'credentials_dir = "/etc/turret/creds";',
            "services.turret.settings.credentials_dir must not be set",
        ),
    ],
)
def test_module_rejects_settings_turret_would_refuse(
    evaluate: ModuleEval, change: str, expected: str
) -> None:
    settings = SETTINGS[: SETTINGS.rindex("}")] + change + "}"
    messages = failed_assertions(evaluate, host(settings))
    assert len(messages) == 1, messages
    assert messages[0].startswith(expected)


def test_module_rejects_a_credential_name_systemd_cannot_use(evaluate: ModuleEval) -> None:
    credentials = CREDENTIALS[: CREDENTIALS.rindex("}")] + '"bad/name" = "/run/x"; }'
    messages = failed_assertions(evaluate, host(credentials=credentials))
    assert len(messages) == 1, messages
    assert messages[0].startswith('services.turret.credentials."bad/name": a credential name')


def test_module_warns_about_exposed_listeners_and_unused_credentials(
    evaluate: ModuleEval,
) -> None:
    settings = SETTINGS[:-1] + 'listen = [ "0.0.0.0:8421" "unix:/run/turret/agents.sock" ]; }'
    credentials = CREDENTIALS[:-1] + 'spare = "/run/secrets/spare"; }'
    checks = evaluate("host.checks", host(settings, credentials))
    assert checks["failedAssertions"] == []
    assert checks["warnings"] == [
        'services.turret.settings.listen contains "0.0.0.0:8421", which is not on loopback: '
        "hosts that can reach it may try agent tokens.",
        "services.turret.credentials.spare is not referenced by services.turret.settings.",
    ]


def test_module_units(evaluate: ModuleEval, tools_dir: Path) -> None:
    system = evaluate("host.system", host())
    socket = system["sockets"]["turret"]
    assert socket["wantedBy"] == ["sockets.target"]
    assert socket["listenStreams"] == ["127.0.0.1:8421", "/run/turret/agents.sock"]
    assert socket["socketConfig"] == {
        "FileDescriptorName": "agents",  # Turret serves the agents' API on these sockets
        "SocketUser": "root",
        "SocketGroup": "turret-agents",
        "SocketMode": "0660",
        "DirectoryMode": "0755",
    }
    assert "turret-agents" in system["groups"]

    admin = system["sockets"]["turret-admin"]
    assert admin["listenStreams"] == ["/run/turret/admin.sock"]
    assert admin["socketConfig"] == {
        "FileDescriptorName": "admin",  # the admin API only
        "Service": "turret.service",
        "SocketUser": "root",
        "SocketGroup": "root",
        "SocketMode": "0600",
        "DirectoryMode": "0755",
    }

    service = system["services"]["turret"]
    config = service["serviceConfig"]
    assert config["Sockets"] == ["turret.socket", "turret-admin.socket"]
    assert service["wants"] == ["turret-admin.socket"]
    assert service["requires"] == ["turret.socket"]
    assert "turret.socket" in service["after"]
    assert service["wantedBy"] == []  # started by the first connection
    assert config["Type"] == "notify"
    assert config["WatchdogSec"] == "30s"
    assert config["LogRateLimitIntervalSec"] == 0  # Turret limits itself; journald drops nothing
    assert config["ExecStart"] == f"{tools_dir}/bin/turret serve --config /etc/turret/turret.yaml"
    assert config["ExecReload"] == f"{tools_dir}/bin/kill -HUP $MAINPID"
    # The state store's directory, from the unit file's hardening block.
    assert (config["StateDirectory"], config["StateDirectoryMode"]) == ("turret", "0700")
    # Reload when the config changes: the trigger is the config file /etc/turret points at.
    assert service["reloadTriggers"] == [system["etc"]["turret/turret.yaml"]["source"]]


def test_module_hardening_is_the_unit_files(evaluate: ModuleEval) -> None:
    config = evaluate("host.system", host())["services"]["turret"]["serviceConfig"]
    expected = unit_hardening((REPO / "systemd" / "turret.service").read_text())
    assert expected, "systemd/turret.service has no directives under # Hardening"
    for key, values in expected.items():
        assert config[key] == (values[0] if len(values) == 1 else values), key


def test_module_socket_permissions_are_options(evaluate: ModuleEval) -> None:
    extra = 'socketUser = "agentd"; socketGroup = "agents"; socketMode = "0600";'
    system = evaluate("host.system", host(extra=extra))
    config = system["sockets"]["turret"]["socketConfig"]
    assert (config["SocketUser"], config["SocketGroup"], config["SocketMode"]) == (
        "agentd",
        "agents",
        "0600",
    )
    assert "turret-agents" not in system["groups"]


def test_module_units_verify_and_score_as_well_as_the_unit_file(
    evaluate: ModuleEval, tmp_path: Path
) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze not found")
    system = evaluate("host.system", host())
    units = tmp_path / "nixos"
    units.mkdir()
    service = units / "turret.service"
    service.write_text(render_service(system["services"]["turret"]))
    socket = units / "turret.socket"
    socket.write_text(render_socket(system["sockets"]["turret"]))

    verify = subprocess.run(  # noqa: S603 - fixed tool, paths made by the test
        [analyze, "verify", "--man=no", str(service), str(socket)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (verify.returncode, verify.stderr) == (0, ""), service.read_text()

    def score(unit: Path) -> float:
        result = subprocess.run(  # noqa: S603 - fixed tool, paths made by the test
            [analyze, "security", "--offline=yes", "--no-pager", str(unit)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        return exposure(result.stdout)

    nixos, reference = score(service), score(REPO / "systemd" / "turret.service")
    assert nixos <= reference, f"NixOS unit scores {nixos}, systemd/turret.service {reference}"


def readme_host() -> str:
    """The `configuration.nix` example of the README's NixOS section."""
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("\n## NixOS") :]
    found = re.search(r"`configuration\.nix`:\n\n```nix\n(.*?)```", section, re.DOTALL)
    assert found is not None, "README: no configuration.nix example under ## NixOS"
    return found.group(1)


def test_readme_example_host_evaluates_and_builds(evaluate: ModuleEval, tmp_path: Path) -> None:
    source = readme_host()
    assert evaluate("host.checks", source) == {"failedAssertions": [], "warnings": []}
    system = evaluate("host.system", source)
    assert system["services"]["turret"]["serviceConfig"]["LoadCredential"] == [
        "claude-token:/run/secrets/turret/claude-token",
        "gitea-token:/run/secrets/turret/gitea-token",
    ]
    assert system["sopsSecrets"]["turret/gitea-token"]["restartUnits"] == ["turret.service"]
    assert system["users"]["claude"]["extraGroups"] == ["turret-agents"]
    result, _ = run_config_build(system["configBuild"], tmp_path)
    assert result.returncode == 0, result.stderr


def test_module_admin_options_render_and_open_the_socket_to_the_group(
    evaluate: ModuleEval,
) -> None:
    extra = 'admin = { allowUids = [ 1000 ]; allowGroup = "wheel"; };'
    system = evaluate("host.system", host(extra=extra))
    assert rendered_config(system)["admin"] == {"allow_uids": [1000], "allow_group": "wheel"}
    config = system["sockets"]["turret-admin"]["socketConfig"]
    assert (config["SocketGroup"], config["SocketMode"]) == ("wheel", "0660")
    assert "admin" not in rendered_config(evaluate("host.system", host()))


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            'admin.allowGroup = "Wheel;x";',
            'services.turret.admin.allowGroup = "Wheel;x" is not a group name',
        ),
    ],
)
def test_module_rejects_bad_admin_options(evaluate: ModuleEval, extra: str, message: str) -> None:
    assert any(message in m for m in failed_assertions(evaluate, host(extra=extra)))


def test_module_rejects_admin_in_settings(evaluate: ModuleEval) -> None:
    settings = SETTINGS.rstrip("}") + ' admin.allow_uids = [ 1 ]; }'
    messages = failed_assertions(evaluate, host(settings=settings))
    assert any(
        m.startswith("services.turret.settings.admin must not be set: use "
                     "services.turret.admin.allowUids") for m in messages
    ), messages


def test_module_credential_policy_renders_credentials(evaluate: ModuleEval) -> None:
    extra = (
        'credentialPolicy."gitea-token" = { maxAge = "90d"; warnBefore = "7d"; owner = "alice";'
        ' rotateHint = "Gitea > Settings"; enforceMaxAge = true; };'
        ' credentialPolicy."alice-token".maxAge = "365d";'
    )
    system = evaluate("host.system", host(extra=extra))
    assert rendered_config(system)["credentials"] == {
        "gitea-token": {"max_age": "90d", "warn_before": "7d", "owner": "alice",
                        "rotate_hint": "Gitea > Settings", "enforce_max_age": True},
        "alice-token": {"max_age": "365d"},
    }  # fmt: skip
    # Turret reads it as written (in-process: the build's `turret` may be another checkout).
    policy = load_config(yaml.safe_dump(rendered_config(system))).credential_policy
    assert policy["gitea-token"].enforce_max_age and policy["alice-token"].max_age == 365 * 86400
    assert "credentials" not in rendered_config(evaluate("host.system", host()))


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ('credentialPolicy."gitea-tokn".maxAge = "90d";',
         'services.turret.credentialPolicy.gitea-tokn is for a credential services.turret.'
         'credentials does not provide'),
        ('credentialPolicy."gitea-token".maxAge = "90 days";',
         'services.turret.credentialPolicy.gitea-token.maxAge = "90 days" is not a duration'),
        ('credentialPolicy."gitea-token".maxAge = "3w";',
         'services.turret.credentialPolicy.gitea-token.maxAge = "3w" is not a duration'),
        ('credentialPolicy."gitea-token" = { maxAge = "90d"; warnBefore = "2 weeks"; };',
         'services.turret.credentialPolicy.gitea-token.warnBefore = "2 weeks" is not a'),
        ('credentialPolicy."gitea-token".enforceMaxAge = true;',
         'services.turret.credentialPolicy.gitea-token.enforceMaxAge needs '
         'services.turret.credentialPolicy.gitea-token.maxAge'),
    ],
)  # fmt: skip
def test_module_rejects_bad_credential_policy(
    evaluate: ModuleEval, extra: str, message: str
) -> None:
    messages = failed_assertions(evaluate, host(extra=extra))
    assert any(message in m for m in messages), messages


def test_module_rejects_credential_policy_twice(evaluate: ModuleEval) -> None:
    settings = SETTINGS.rstrip("}") + ' credentials."gitea-token".max_age = "9d"; }'
    extra = 'credentialPolicy."gitea-token".maxAge = "90d";'
    messages = failed_assertions(evaluate, host(settings=settings, extra=extra))
    assert any("services.turret.settings.credentials and services.turret.credentialPolicy"
               in m for m in messages), messages  # fmt: skip
