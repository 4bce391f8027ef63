"""The dead-man switch in a whole Turret: a late check-in seals every listener, `STATUS=` and
`turret status` say why, and `turret checkin` and the record of it survive a restart."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.admin.conftest import write_served
from tests.conftest import Upstream
from tests.gateway import Canaries
from turret.audit import Auditor, LineSink
from turret.deadman import last_checkin
from turret.errors import StartupError
from turret.runtime import RuntimeHolder
from turret.server import Gateway, _SignalQueue, load

USER = "/v1/proxy/gitea/api/v1/user"


async def test_late_checkin_seals_every_listener_and_status_says_why(
    upstream: Upstream, leak_check: Canaries, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("STATE_DIRECTORY", raising=False)
    monkeypatch.delenv("LISTEN_FDS", raising=False)
    s = write_served(tmp_path, upstream, leak_check, admin="checkin: {max_interval: 1h}\n")
    await s.start()
    try:
        assert s.gateway is not None and s.gateway.deadman is not None
        switch = s.gateway.deadman
        assert (await s.agent(USER))[0] == 200
        code, out, _ = await s.cli("checkin")
        assert code == 0 and "next one due by" in out
        switch.wall = lambda: time.time() + 3601  # an hour and a second after that check-in
        assert len(await switch.tick()) == 1
        for tcp in (False, True):
            status, doc = await s.agent(USER, tcp=tcp)
            assert status == 503 and doc["error"]["code"] == "sealed"
        assert "dead-man switch fired: no checkin for" in s.gateway.status()
        _, doc = await s.admin("GET", "/v1/admin/status")
        assert doc["sealed"]["by"] == "checkin"
        await s.restart()
        assert s.gateway is not None and s.gateway.state is not None
        checkin = last_checkin(s.gateway.state)
        assert checkin is not None and checkin[1].startswith("uid:")
        assert (await s.agent(USER))[0] == 503  # still sealed: only `turret unseal` lifts it
        assert (await s.cli("unseal"))[0] == 0
        assert (await s.cli("checkin"))[0] == 0
        assert (await s.agent(USER))[0] == 200
        failed = [r for r in s.audit() if r["MESSAGE_ID"].endswith("6e60")]
        assert len(failed) == 1 and failed[0]["PRIORITY"] == "2"
    finally:
        upstream.release.set()
        if s.gateway is not None:
            await s.stop()
    leak_check.assert_absent([("answers", "\n".join(s.seen)), ("audit", s.audit_path.read_text())])


async def test_heartbeat_without_a_state_directory_refuses_to_start(
    upstream: Upstream, leak_check: Canaries, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("STATE_DIRECTORY", raising=False)
    monkeypatch.delenv("LISTEN_FDS", raising=False)
    s = write_served(
        tmp_path, upstream, leak_check, state=False, admin="checkin: {max_interval: 1h}\n"
    )
    auditor = Auditor(LineSink.open(str(s.audit_path)))
    gateway = Gateway(s.options, auditor, RuntimeHolder(load(s.options)))
    with pytest.raises(StartupError, match="need a state directory"):
        await gateway.run(_SignalQueue())
    assert gateway.addresses() == []  # refused before binding anything
