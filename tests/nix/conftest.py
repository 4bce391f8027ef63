"""Fixtures for the Nix tests: nix-instantiate from apt, nixpkgs' lib where a copy is at hand."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.nix.nixtools import HERE, LIB_VARIABLE, ModuleEval, nix_eval_json


@pytest.fixture(scope="session")
def nix() -> str:
    """Path of nix-instantiate; CI installs it (Makefile APT_PACKAGES), elsewhere it may skip."""
    path = shutil.which("nix-instantiate")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("nix-instantiate is missing: `make sysdeps` installs nix-bin")
        pytest.skip("nix-instantiate not found: install nix-bin (`make sysdeps` does)")
    return path


@pytest.fixture(scope="session")
def nixpkgs_lib() -> str:
    """A local copy of nix-community/nixpkgs.lib, named by TURRET_NIXPKGS_LIB, or skip."""
    value = os.environ.get(LIB_VARIABLE)
    if not value:
        pytest.skip(
            f"{LIB_VARIABLE} is not set: point it at a local copy of nix-community/nixpkgs.lib "
            "(a directory holding lib/default.nix) to evaluate the NixOS module"
        )
    path = Path(value).resolve()
    if not (path / "lib" / "default.nix").is_file():
        pytest.fail(f"{LIB_VARIABLE}={value} holds no lib/default.nix")
    return str(path)


@pytest.fixture(scope="session")
def tools_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory with bin/turret (this checkout's) and bin/kill: the stub packages' outPath."""
    turret = Path(sys.executable).parent / "turret"
    kill = shutil.which("kill")
    if not turret.is_file() or kill is None:
        pytest.fail(f"need {turret} (pip install -e .) and kill on PATH")
    root = tmp_path_factory.mktemp("tools")
    (root / "bin").mkdir()
    (root / "bin" / "turret").symlink_to(turret)
    (root / "bin" / "kill").symlink_to(kill)
    return root


@pytest.fixture
def evaluate(nix: str, nixpkgs_lib: str, tools_dir: Path, tmp_path: Path) -> ModuleEval:
    """Evaluate `attr` of tests/nix/eval-module.nix, with `host` as the host configuration."""
    counter = iter(range(1_000_000))

    def run(attr: str, host: str | None = None) -> Any:
        args = ["--argstr", "nixpkgsLib", nixpkgs_lib, "--argstr", "toolsDir", str(tools_dir)]
        if host is not None:
            host_file = tmp_path / f"host-{next(counter)}.nix"
            host_file.write_text(host, encoding="utf-8")
            args += ["--arg", "host", str(host_file)]
        return nix_eval_json(nix, str(HERE / "eval-module.nix"), "-A", attr, *args)

    return run
