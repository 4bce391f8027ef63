"""Before serving: the token is read from the environment or a file, never argv, and checked
with Turret; a missing or refused token ends the process with a clear message."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from tests.capabilities.conftest import CapGateway
from tests.mcp.conftest import bridge_args
from tests.mcp.process import spawn
from turret.auth import new_token


def assert_no_tokens(gw: CapGateway, text: str) -> None:
    for token in gw.tokens.values():
        assert token not in text


async def test_start_without_token_exits_before_serving(mcpgw: CapGateway) -> None:
    bridge = await spawn(bridge_args(mcpgw), {})
    assert await bridge.finish() != 0
    assert "no token" in bridge.stderr and "TURRET_TOKEN" in bridge.stderr


@pytest.mark.parametrize("where", ["env", "file", "credential"])
async def test_start_refused_token_exits_with_turrets_reason(
    mcpgw: CapGateway, tmp_path: Path, where: str
) -> None:
    wrong = new_token()
    (tmp_path / "turret-token").write_text(wrong + "\n")
    env = {
        "env": {"TURRET_TOKEN": wrong},
        "file": {},
        "credential": {"CREDENTIALS_DIRECTORY": str(tmp_path)},
    }[where]
    extra = ["--token-file", str(tmp_path / "turret-token")] if where == "file" else []
    bridge = await spawn(bridge_args(mcpgw, *extra), env)
    assert await bridge.finish() != 0
    assert "token was not accepted" in bridge.stderr and "unauthorized" in bridge.stderr
    assert wrong not in bridge.stderr


async def test_start_empty_or_missing_token_file(mcpgw: CapGateway, tmp_path: Path) -> None:
    (tmp_path / "empty").write_text("\n")
    for path, says in [(tmp_path / "empty", "is empty"), (tmp_path / "nope", "cannot read")]:
        bridge = await spawn(bridge_args(mcpgw, "--token-file", str(path)), {})
        assert await bridge.finish() != 0
        assert says in bridge.stderr


async def test_start_turret_down_exits(tmp_path: Path) -> None:
    sock = str(tmp_path / "absent.sock")
    bridge = await spawn(["-m", "turret", "mcp", "--socket", sock], {"TURRET_TOKEN": new_token()})
    assert await bridge.finish() != 0
    assert "Turret is not reachable at " + sock in bridge.stderr


async def test_start_sigterm_and_eof_stop_cleanly(mcpgw: CapGateway) -> None:
    env = {"TURRET_TOKEN": mcpgw.tokens["opencode"]}
    bridge = await spawn(bridge_args(mcpgw), env)
    await bridge.line_with("serving")
    bridge.proc.send_signal(signal.SIGTERM)
    assert await bridge.finish() == 0
    assert "Traceback" not in bridge.stderr
    assert_no_tokens(mcpgw, bridge.stderr)

    bridge = await spawn(bridge_args(mcpgw), env)
    await bridge.line_with("serving")
    assert bridge.proc.stdin is not None
    bridge.proc.stdin.close()
    assert await bridge.finish() == 0
    assert "Traceback" not in bridge.stderr
