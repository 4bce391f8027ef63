"""The module's reader of the `# Hardening` block of systemd/turret.service (nix/lib.nix)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.nix.nixtools import REPO, NixError, nix_eval_json, unit_hardening

EXPR = """{ nixpkgsLib, text }:
let
  lib = import (/. + nixpkgsLib + "/lib");
  turretLib = import (/. + "@REPO@/nix/lib.nix") { inherit lib; };
in
turretLib.parseHardening "test.service" text
""".replace("@REPO@", str(REPO))


def parse(nix: str, nixpkgs_lib: str, text: str) -> Any:
    return nix_eval_json(
        nix, "-E", EXPR, "--argstr", "nixpkgsLib", nixpkgs_lib, "--argstr", "text", text
    )


def test_hardening_reads_comments_repeats_and_continuations(nix: str, nixpkgs_lib: str) -> None:
    text = """[Unit]
Description=x
# Hardening in the [Unit] section would not count: this comment is not the marker line.

[Service]
ExecStart=/bin/true
WatchdogSec=30

# Hardening: every relaxation carries a comment.
DynamicUser=yes

; Outbound HTTP to the upstreams needs AF_INET and AF_INET6.
RestrictAddressFamilies=AF_UNIX \\
  AF_INET \\
# a comment inside a continuation is skipped, as systemd does
  AF_INET6
CapabilityBoundingSet=
SystemCallFilter=@system-service
SystemCallFilter = ~@privileged @resources
   ProtectSystem=strict   \t
Description=a # is not a comment here

[Install]
WantedBy=multi-user.target
"""
    assert parse(nix, nixpkgs_lib, text) == {
        "DynamicUser": "yes",
        "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
        "CapabilityBoundingSet": "",
        "SystemCallFilter": ["@system-service", "~@privileged @resources"],
        "ProtectSystem": "strict",
        "Description": "a # is not a comment here",
    }


def test_hardening_block_may_end_the_file(nix: str, nixpkgs_lib: str) -> None:
    text = (
        "[Service]\n# --- Hardening ---\nNoNewPrivileges=yes\n"
        "SystemCallFilter=\nSystemCallFilter=@basic-io"
    )
    assert parse(nix, nixpkgs_lib, text) == {
        "NoNewPrivileges": "yes",
        "SystemCallFilter": ["", "@basic-io"],  # a reset, then a list: kept in order
    }


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[Service]\nExecStart=/bin/true\n", "no '# Hardening' comment"),
        ("[Unit]\n# Hardening\nNoNewPrivileges=yes\n", "must be in the [Service] section"),
        ("[Service]\n# Hardening\nNoNewPrivileges yes\n", "cannot read 'NoNewPrivileges yes'"),
    ],
)
def test_hardening_refuses_what_it_cannot_read(
    nix: str, nixpkgs_lib: str, text: str, message: str
) -> None:
    with pytest.raises(NixError, match=r"^error: test\.service: ") as caught:
        parse(nix, nixpkgs_lib, text)
    assert message in str(caught.value)


def test_hardening_of_the_shipped_unit_matches_an_independent_reading(
    nix: str, nixpkgs_lib: str
) -> None:
    text = (REPO / "systemd" / "turret.service").read_text()
    expected = {k: v[0] if len(v) == 1 else v for k, v in unit_hardening(text).items()}
    assert parse(nix, nixpkgs_lib, text) == expected
    for key in ("DynamicUser", "NoNewPrivileges", "ProtectSystem", "SystemCallFilter"):
        assert key in expected
