"""The NixOS VM test (nix/tests/vm.nix), checked as far as it can be without running a VM.

Its machine is evaluated with the module and the option stubs, its specialisation too; what
switching between them would do is read from the units, and its test script is compiled.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.nix.nixtools import ModuleEval, run_config_build


@pytest.fixture
def vm(evaluate: ModuleEval) -> dict[str, Any]:
    result: dict[str, Any] = evaluate("vm")
    return result


def test_vm_machine_evaluates_without_assertions_or_warnings(vm: dict[str, Any]) -> None:
    assert vm["name"] == "turret"
    for variant in ("base", "specialised"):
        assert vm[variant]["checks"] == {"failedAssertions": [], "warnings": []}, variant


def test_vm_machine_configs_pass_the_build_time_check(vm: dict[str, Any], tmp_path: Path) -> None:
    for variant in ("base", "specialised"):
        result, _ = run_config_build(vm[variant]["system"]["configBuild"], tmp_path)
        assert result.returncode == 0, result.stderr


def test_vm_specialisation_changes_only_what_a_reload_applies(vm: dict[str, Any]) -> None:
    base, changed = vm["base"]["system"], vm["specialised"]["system"]
    old, new = base["services"]["turret"], changed["services"]["turret"]
    # switch-to-configuration reloads a unit whose only change is X-Reload-Triggers.
    assert old["reloadTriggers"] != new["reloadTriggers"]
    assert {k: v for k, v in old.items() if k != "reloadTriggers"} == {
        k: v for k, v in new.items() if k != "reloadTriggers"
    }
    assert base["sockets"] == changed["sockets"]
    grants = json.loads(changed["configBuild"]["unchecked"]["value"])["agents"]["alice"]["proxy"]
    assert sorted(p for g in grants for p in g["paths"]) == ["/api/v1/orgs/**", "/api/v1/repos/**"]


def test_vm_machine_keeps_secrets_outside_the_store(vm: dict[str, Any]) -> None:
    system = vm["base"]["system"]
    assert system["services"]["turret"]["serviceConfig"]["LoadCredential"] == [
        "alice-token:/run/secrets/turret/alice-token",
        "gitea-token:/run/secrets/turret/gitea-token",
    ]
    assert system["users"]["alice"]["extraGroups"] == ["turret-agents"]
    assert system["users"]["mallory"]["extraGroups"] == []
    assert system["sockets"]["turret"]["socketConfig"]["SocketGroup"] == "turret-agents"


def test_vm_test_script_compiles(vm: dict[str, Any]) -> None:
    script: str = vm["testScript"]
    compile(script, "nix/tests/vm.nix:testScript", "exec")
    for step in ("switch-to-configuration test", "journalctl -o json", "runuser -u mallory"):
        assert step in script
