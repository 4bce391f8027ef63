"""`turret status`, `agents`, `revoke`, `unrevoke`, `seal`, `unseal`, `killswitch` as an operator
runs them, against a running Turret: output, `--json`, exit status, no secret in any output."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable

import pytest

from tests.admin.conftest import Served

USER = "/v1/proxy/gitea/api/v1/user"


async def test_cli_status_shows_what_turret_is_doing(
    served: Served, no_leaks_in: Callable[[str], None]
) -> None:
    await served.agent(USER)
    code, out, err = await served.cli("status")
    assert code == 0 and not err
    assert "sealed: no" in out and "agents: 2 (revoked: none)" in out
    assert "services: apikey, basic, gitea, q" in out and "1 allowed, 0 denied" in out
    code, out, _ = await served.cli("status", "--json")
    doc = json.loads(out)
    assert code == 0 and doc["requests"]["decisions"] == {"allow": 1}
    no_leaks_in(out)


async def test_cli_revoke_and_unrevoke_an_agent(
    served: Served, no_leaks_in: Callable[[str], None]
) -> None:
    code, out, _ = await served.cli("revoke", "opencode", "--reason", "leaked in a log")
    assert code == 0 and out.startswith("revoked opencode; 0 derived tokens revoked")
    assert (await served.agent(USER))[0] == 401
    code, out, _ = await served.cli("agents")
    line = next(line for line in out.splitlines() if line.startswith("opencode"))
    assert " yes " in line and "gitea DELETE/GET/POST/PUT" in line
    code, out, _ = await served.cli("agents", "--json")
    (revoked,) = [a for a in json.loads(out)["agents"] if a["revoked"]]
    assert revoked["revoked"]["reason"] == "leaked in a log"
    assert (await served.cli("unrevoke", "opencode"))[0] == 0
    assert (await served.agent(USER))[0] == 200
    no_leaks_in(out)


async def test_cli_killswitch_seal_and_unseal(served: Served) -> None:
    code, out, _ = await served.cli("killswitch", "--reason", "agent compromised")
    assert code == 0 and out.startswith("sealed; 0 derived tokens revoked")
    assert (await served.agent(USER, tcp=True))[0] == 503
    code, out, _ = await served.cli("status")
    assert "sealed: since " in out and "agent compromised" in out
    assert (await served.cli("unseal"))[0] == 0
    assert (await served.cli("seal"))[0] == 0
    assert (await served.agent(USER))[0] == 503
    assert (await served.cli("unseal", "--json"))[0] == 0
    assert (await served.agent(USER))[0] == 200


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["revoke", "nobody"], "no agent 'nobody' in the configuration"),
        (["unrevoke", "opencode"], "agent 'opencode' is not revoked"),
        (["unseal"], "turret is not sealed"),
        (["revoke", "bad name"], "agent name must match"),
        (["revoke", "../../seal"], "agent name must match"),  # one path segment, no games
        (["unrevoke", "%2e%2e"], "agent name must match"),
    ],
)
async def test_cli_failure_exits_1_with_turrets_message(
    served: Served, args: list[str], message: str
) -> None:
    code, out, err = await served.cli(*args)
    assert code == 1 and message in err and not out
    code, out, err = await served.cli(*args, "--json")
    assert code == 1 and json.loads(out)["ok"] is False
    _, doc = await served.admin("GET", "/v1/admin/status")
    assert doc["sealed"] is None and doc["agents"]["revoked"] == []


@pytest.mark.parametrize("env", [False, True], ids=["--admin-socket", "TURRET_ADMIN_SOCKET"])
async def test_cli_exits_69_when_turret_is_not_reachable(tmp_path: object, *, env: bool) -> None:
    missing = f"{tmp_path}/missing.sock"
    args = ["status"] if env else ["status", "--admin-socket", missing]
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "turret", *args,
        env={"TURRET_ADMIN_SOCKET": missing, "PATH": "/usr/bin:/bin"},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await proc.communicate()
    assert proc.returncode == 69 and not out
    assert f"{missing}: Turret is not reachable" in err.decode()


@pytest.mark.parametrize(
    "args", [["revoke"], ["status", "extra"], ["seal", "--bogus"], ["unrevoke", "a", "b"]]
)
async def test_cli_usage_error_exits_2(args: list[str]) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "turret", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    await proc.communicate()
    assert proc.returncode == 2
