"""Every .nix file parses; the flake has the expected shape; the package follows pyproject.toml.

The first two need only Nix 2.8 (no nixpkgs): they run in CI.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from tests.nix.nixtools import REPO, nix_eval_json, nix_instantiate, nix_string

SYSTEMS = ["aarch64-linux", "x86_64-linux"]


def nix_files() -> list[Path]:
    return sorted(
        p
        for p in REPO.rglob("*.nix")
        if not any(part.startswith(".") for part in p.relative_to(REPO).parts)
    )


def test_nix_files_are_found() -> None:
    names = {str(p.relative_to(REPO)) for p in nix_files()}
    assert {"flake.nix", "nix/package.nix", "nix/module.nix", "nix/tests/vm.nix"} <= names


@pytest.mark.parametrize("path", nix_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_nix_file_parses(nix: str, path: Path) -> None:
    # --parse also rejects undefined variables and duplicate attributes.
    result = nix_instantiate(nix, "--parse", str(path))
    assert result.returncode == 0, result.stderr


def test_readme_nix_examples_parse(nix: str, tmp_path: Path) -> None:
    readme = (REPO / "README.md").read_text()
    blocks = re.findall(r"```nix\n(.*?)```", readme, re.DOTALL)
    assert len(blocks) >= 2, "README: the NixOS section shows a flake and a configuration"
    for i, block in enumerate(blocks):
        source = tmp_path / f"readme-{i}.nix"
        source.write_text(block)
        result = nix_instantiate(nix, "--parse", str(source))
        assert result.returncode == 0, f"README nix block {i}: {result.stderr}"


def test_nix_sources_never_use_with_lib() -> None:
    # `with lib;` hides undefined names from --parse; `inherit (lib) ...;` does not.
    for path in nix_files():
        assert not re.search(r"\bwith\s+(pkgs\.)?lib\s*;", path.read_text()), path


# Builtins only: the outputs function is called with a nixpkgs stand-in that offers genAttrs and
# packages that must never be forced, so only the attribute structure is checked.
FLAKE_SHAPE = """
let
  flake = import (/. + %(flake)s);
  genAttrs = names: f: builtins.listToAttrs (map (name: { inherit name; value = f name; }) names);
  nixpkgs = {
    lib = { inherit genAttrs; };
    legacyPackages = genAttrs %(systems)s (system: throw "packages for ${system} were forced");
  };
  outputs = flake.outputs { self = outputs; inherit nixpkgs; };
  names = v: if builtins.isAttrs v then builtins.attrNames v else null;
in
{
  keys = builtins.attrNames flake;
  description = builtins.isString flake.description;
  inputs = builtins.mapAttrs (_: input: input.url or null) flake.inputs;
  outputArgs = builtins.functionArgs flake.outputs;
  outputs = builtins.mapAttrs (_: v: builtins.mapAttrs (_: names) v) outputs;
  module = outputs.nixosModules.default == /. + %(module)s;
}
"""


def test_flake_shape(nix: str) -> None:
    expr = FLAKE_SHAPE % {
        "flake": nix_string(str(REPO / "flake.nix")),
        "module": nix_string(str(REPO / "nix" / "module.nix")),
        "systems": "[ " + " ".join(nix_string(s) for s in SYSTEMS) + " ]",
    }
    shape = nix_eval_json(nix, "-E", expr)
    assert shape["keys"] == ["description", "inputs", "outputs"]
    assert shape["description"] is True
    assert shape["inputs"] == {"nixpkgs": "github:NixOS/nixpkgs/nixos-unstable"}
    # A function of exactly these inputs, none with a default.
    assert shape["outputArgs"] == {"nixpkgs": False, "self": False}
    per_system = {system: ["default"] for system in SYSTEMS}
    assert shape["outputs"] == {
        "packages": per_system,
        "devShells": per_system,
        "checks": {system: ["package", "vm"] for system in SYSTEMS},
        "nixosModules": {"default": None},
    }
    assert shape["module"] is True


PACKAGE = """{ nixpkgsLib, systemdName }:
let
  lib = import (/. + nixpkgsLib + "/lib");
  names = [ "setuptools" "aiohttp" "ahocorasick-rs" "pyyaml" "prometheus-client"
            "pyjwt" "cryptography" "botocore" systemdName "mcp" "uvicorn" "pytestCheckHook"
            "pytest-aiohttp" "pytest-timeout" ];
  python3Packages = lib.genAttrs names (name: name) // { buildPythonApplication = args: args; };
  package = import (/. + %s) { inherit lib python3Packages; };
in
removeAttrs package [ "src" ]
"""


@pytest.mark.parametrize("systemd_name", ["systemd-python", "systemd"])
def test_package_follows_pyproject(nix: str, nixpkgs_lib: str, systemd_name: str) -> None:
    expr = PACKAGE % nix_string(str(REPO / "nix" / "package.nix"))
    package = nix_eval_json(
        nix,
        "-E",
        expr,
        "--argstr",
        "nixpkgsLib",
        nixpkgs_lib,
        "--argstr",
        "systemdName",
        systemd_name,
    )
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert (package["pname"], package["version"]) == (project["name"], project["version"])
    assert package["pyproject"] is True
    assert package["meta"]["mainProgram"] == "turret"
    # The package carries the mcp extra too, so an agent unit can run `turret mcp` from it.
    wanted = project["dependencies"] + project["optional-dependencies"]["mcp"]
    declared = {re.split(r"[<>=!~ ]", d)[0].lower() for d in wanted}
    nix_names = {"systemd-python" if n == "systemd" else n for n in package["dependencies"]}
    assert nix_names == declared
    assert {"pytestCheckHook", "pytest-aiohttp", "pytest-timeout"} <= set(
        package["nativeCheckInputs"]
    )
