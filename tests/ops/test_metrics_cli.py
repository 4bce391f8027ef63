"""`turret metrics [--textfile PATH]` and `turret checkin` in a child process, against a whole
Turret: the text printed, the textfile written whole, the exit statuses."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import sys
from pathlib import Path

import pytest

from tests.admin.conftest import Served
from tests.ops.conftest import series
from turret.admin_client.ops import write_textfile

USER = "/v1/proxy/gitea/api/v1/user"
ALLOW = (("agent", "opencode"), ("capability", "-"), ("decision", "allow"), ("service", "gitea"))


async def test_metrics_cli_prints_the_exposition(served: Served) -> None:
    assert (await served.agent(USER))[0] == 200
    code, out, err = await served.cli("metrics")
    assert code == 0, err
    assert series(out)[("turret_requests_total", ALLOW)] == 1


async def test_metrics_cli_writes_the_textfile_atomically(served: Served, tmp_path: Path) -> None:
    target = tmp_path / "collector" / "turret.prom"
    target.parent.mkdir()
    target.write_text("old content\n")
    assert (await served.agent(USER))[0] == 200
    code, out, err = await served.cli("metrics", "--textfile", str(target))
    assert code == 0 and out == "", err
    assert series(target.read_text())[("turret_requests_total", ALLOW)] == 1
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert sorted(p.name for p in target.parent.iterdir()) == ["turret.prom"]  # no temp left


async def test_metrics_cli_fails_cleanly(served: Served, tmp_path: Path) -> None:
    code, _, err = await served.cli("metrics", "--textfile", str(tmp_path / "missing" / "t.prom"))
    assert code == 1 and "cannot write" in err
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "turret", "metrics", "--admin-socket", str(tmp_path / "none.sock"),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err_bytes = await proc.communicate()
    assert proc.returncode == 69 and b"not reachable" in err_bytes


def test_write_textfile_leaves_the_old_file_and_no_temp_when_it_fails(tmp_path: Path) -> None:
    target = tmp_path / "turret.prom"
    target.mkdir()  # a rename cannot replace a directory
    with pytest.raises(OSError):
        write_textfile(target, "after\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["turret.prom"]
    target.rmdir()
    write_textfile(target, "after\n")
    write_textfile(target, "again\n")
    assert target.read_text() == "again\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["turret.prom"]


async def test_checkin_cli_records_the_operator_in_the_store_and_audit(served: Served) -> None:
    code, out, err = await served.cli("checkin")
    assert code == 0, err
    assert "checked in" in out and f"uid:{os.getuid()}" in out
    code, out, _ = await served.cli("checkin", "--json")
    doc = json.loads(out)
    assert doc["checkin"]["by"] == f"uid:{os.getuid()}" and doc["due_by"] is None
    actions = [r for r in served.audit() if r.get("TURRET_ACTION") == "checkin"]
    assert len(actions) == 2 and actions[0]["TURRET_OPERATOR_UID"] == str(os.getuid())
    await served.restart()
    _, text, _ = await served.cli("metrics")  # the check-in survived the restart
    assert series(text)[("turret_last_checkin_timestamp_seconds", ())] == doc["checkin"]["at"]
