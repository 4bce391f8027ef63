"""Helpers for the Nix tests: run Nix 2.8 offline, and turn NixOS unit options into unit files.

Nothing here fetches anything: evaluation uses the dummy store, and nixpkgs' lib only where the
developer points `TURRET_NIXPKGS_LIB` at a local copy of nix-community/nixpkgs.lib.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any, Protocol

import yaml

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
LIB_VARIABLE = "TURRET_NIXPKGS_LIB"
NIX_TIMEOUT = 60

# Evaluation only: no daemon, no build users, no NIX_PATH lookups, nothing written to /nix.
NIX_ENV = {
    **os.environ,
    "NIX_CONFIG": "build-users-group =\nexperimental-features = nix-command flakes",
    "NIX_PATH": "",
}


class ModuleEval(Protocol):
    """Evaluates one attribute of eval-module.nix, with `host` (Nix source) as the host module."""

    def __call__(self, attr: str, host: str | None = None) -> Any: ...


class NixError(Exception):
    """nix-instantiate failed; the message is its stderr."""


def nix_instantiate(binary: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run nix-instantiate against the dummy store."""
    return subprocess.run(  # noqa: S603 - fixed binary, arguments built by the tests
        [binary, "--store", "dummy://", *args],
        capture_output=True,
        text=True,
        timeout=NIX_TIMEOUT,
        env=NIX_ENV,
        check=False,
    )


def nix_eval_json(binary: str, *args: str) -> Any:
    """`nix-instantiate --eval --strict --json ARGS` as Python data; NixError on failure."""
    result = nix_instantiate(binary, "--eval", "--strict", "--json", *args)
    if result.returncode != 0:
        raise NixError(result.stderr)
    return json.loads(result.stdout)


def nix_string(text: str) -> str:
    """`text` as a Nix string literal."""
    return json.dumps(text).replace("${", "\\${")


# --- the hardening block of systemd/turret.service, read independently of the Nix parser --------


def unit_hardening(text: str) -> dict[str, list[str]]:
    """The directives under `# Hardening` up to the next section, each key with its values."""
    lines: list[str] = []
    pending: str | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if pending is not None:
            if line.startswith(("#", ";")):
                continue
            pending = f"{pending} {line}"
            if pending.endswith("\\"):
                pending = pending[:-1].rstrip()
                continue
            lines.append(pending)
            pending = None
        elif line.endswith("\\") and not line.startswith(("#", ";")):
            pending = line[:-1].rstrip()
        else:
            lines.append(line)
    start = next(i for i, line in enumerate(lines) if re.match(r"#[^A-Za-z]*[Hh]ardening\b", line))
    directives: dict[str, list[str]] = {}
    for line in lines[start + 1 :]:
        if line.startswith("["):
            break
        if not line or line.startswith(("#", ";")):
            continue
        key, _, value = line.partition("=")
        directives.setdefault(key.strip(), []).append(value.strip())
    return directives


# --- NixOS unit options rendered to unit files, the way nixos/lib/systemd-lib.nix does ----------

_UNIT_LISTS = {
    "requires": "Requires",
    "wants": "Wants",
    "after": "After",
    "before": "Before",
    "bindsTo": "BindsTo",
    "partOf": "PartOf",
    "conflicts": "Conflicts",
}


def _value(value: Any) -> str:
    if value is True:
        return "true"
    if value is False:
        return "false"
    return str(value)


def _section(name: str, entries: list[tuple[str, Any]]) -> str:
    lines = [f"[{name}]"]
    for key, value in entries:
        lines.extend(f"{key}={_value(v)}" for v in (value if isinstance(value, list) else [value]))
    return "\n".join(lines) + "\n"


def _unit_section(unit: dict[str, Any]) -> str:
    entries: list[tuple[str, Any]] = [("Description", unit["description"])]
    entries += [(key, " ".join(unit[opt])) for opt, key in _UNIT_LISTS.items() if unit[opt]]
    if unit.get("restartTriggers"):
        entries.append(("X-Restart-Triggers", " ".join(map(str, unit["restartTriggers"]))))
    if unit.get("reloadTriggers"):
        entries.append(("X-Reload-Triggers", " ".join(map(str, unit["reloadTriggers"]))))
    entries += sorted(unit["unitConfig"].items())
    return _section("Unit", entries)


def render_service(unit: dict[str, Any]) -> str:
    """A `systemd.services.<name>` value as a .service file."""
    env = [("Environment", f"{k}={v}") for k, v in sorted(unit["environment"].items()) if v]
    return (
        _unit_section(unit)
        + "\n"
        + _section("Service", env + sorted(unit["serviceConfig"].items()))
    )


def render_socket(unit: dict[str, Any]) -> str:
    """A `systemd.sockets.<name>` value as a .socket file."""
    listen = [("ListenStream", s) for s in unit["listenStreams"]]
    listen += [("ListenDatagram", s) for s in unit["listenDatagrams"]]
    return (
        _unit_section(unit)
        + "\n"
        + _section("Socket", listen + sorted(unit["socketConfig"].items()))
    )


def run_config_build(
    build: dict[str, Any], tmp_path: Path
) -> tuple[subprocess.CompletedProcess[str], Path]:
    """Run the module's build-time check the way the runCommand builder would."""
    unchecked = tmp_path / "turret-unchecked.yaml"
    # formats.yaml turns the JSON into YAML with remarshal; plain data reads back the same.
    unchecked.write_text(yaml.safe_dump(json.loads(build["unchecked"]["value"])))
    out = tmp_path / "turret.yaml"
    path = ":".join([*(f"{p}/bin" for p in build["nativeBuildInputs"]), "/usr/bin", "/bin"])
    result = subprocess.run(  # noqa: S603 - the module's own build script, run as its builder would
        ["bash", "-euo", "pipefail", "-c", build["buildCommand"]],  # noqa: S607 - bash from PATH
        env={"PATH": path, "unchecked": str(unchecked), "out": str(out)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return result, out


def exposure(output: str) -> float:
    """The overall exposure level printed by `systemd-analyze security`."""
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", output)
    if m is None:
        raise ValueError(f"no exposure level in: {output[-300:]}")
    return float(m.group(1))
