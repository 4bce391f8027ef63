"""The pieces of `turret rotate` that need no server: where a credential comes from
(`systemctl show`, tolerated when absent), the steps for a sops-nix secret or a plain file;
and `turret credentials` against a Turret without a state store."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.admin.conftest import Served, write_served
from tests.conftest import Upstream
from tests.gateway import Canaries
from turret.admin_client.keyage import credential_source, render_rotation, rotation_steps

SHOW = """LoadCredential=gitea-token:/run/secrets/turret/gitea-token
LoadCredential=alice-token:/etc/turret/alice-token
LoadCredentialEncrypted=
"""


def fake_systemctl(directory: Path, output: str, status: int = 0) -> None:
    script = directory / "systemctl"
    script.write_text(f"#!/bin/sh\ncat <<'EOF'\n{output}EOF\nexit {status}\n")
    script.chmod(0o755)


@pytest.mark.parametrize(
    ("name", "source"),
    [
        ("gitea-token", "/run/secrets/turret/gitea-token"),
        ("alice-token", "/etc/turret/alice-token"),
        ("bot-token", None),  # loaded some other way
        ("token", None),  # a suffix of another name is not that name
    ],
)
def test_credential_source_from_systemctl_show(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, source: str | None
) -> None:
    fake_systemctl(tmp_path, SHOW)
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")  # the fake first, then cat
    assert credential_source("turret", name) == source


def test_credential_source_tolerates_no_systemctl(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no systemctl at all
    assert credential_source("turret", "gitea-token") is None
    fake_systemctl(tmp_path, "", status=1)  # systemd not running, or no such unit
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    assert credential_source("turret", "gitea-token") is None


CRED = {
    "name": "gitea-token", "fingerprint": "0badc0de", "state": "overdue",
    "age_seconds": 100 * 86400, "max_age_seconds": 90 * 86400, "last_used": None,
    "owner": "alice", "rotate_hint": "Gitea UI",
    "services": ["gitea", "forge"], "other_uses": [],
}  # fmt: skip


def test_rotation_steps_for_a_sops_nix_secret() -> None:
    steps = rotation_steps(CRED, "/run/secrets/turret/gitea-token")
    assert steps[0].startswith("create a new value at gitea, forge")
    assert "`sops` edit" in steps[1] and "nixos-rebuild switch" in steps[2]
    text = render_rotation(CRED, "/run/secrets/turret/gitea-token")
    assert "source: /run/secrets/turret/gitea-token (a sops-nix secret)" in text
    assert "age: 100d 0h 0m (max_age 90d 0h 0m)" in text and "state overdue" in text


def test_rotation_steps_for_a_plain_file_or_unknown_source() -> None:
    steps = rotation_steps(CRED, "/etc/turret/gitea-token")
    assert "write the new value to /etc/turret/gitea-token" in steps[1]
    assert "systemctl restart turret" in steps[2]
    assert "unknown (systemctl show gave no LoadCredential=" in render_rotation(CRED, None)


@pytest.fixture
async def stateless(
    upstream: Upstream, leak_check: Canaries, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Served]:
    monkeypatch.delenv("STATE_DIRECTORY", raising=False)
    monkeypatch.delenv("LISTEN_FDS", raising=False)
    s = write_served(tmp_path, upstream, leak_check, state=False)
    await s.start()
    yield s
    await s.finish(leak_check)


async def test_credentials_without_a_state_store_says_ages_are_unknown(
    stateless: Served,
) -> None:
    code, out, _ = await stateless.cli("credentials")
    assert code == 0 and "no state store: ages are unknown" in out
    assert all(" unknown " in line for line in out.splitlines()[1:-1])
    code, out, _ = await stateless.cli("credentials", "--json")
    doc = json.loads(out)
    assert doc["state_store"] is False
    assert {c["state"] for c in doc["credentials"]} == {"unknown"}
    assert all(c["fingerprint"] is None for c in doc["credentials"])
    code, out, _ = await stateless.cli("status", "--json")
    assert json.loads(out)["credentials_needing_attention"] == []
    code, _, err = await stateless.cli("rotate", "gitea-token", "--wait", "--timeout", "1")
    assert code == 1 and "no state store" in err
