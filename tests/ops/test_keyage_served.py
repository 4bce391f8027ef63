"""Key age in a whole running Turret (`server.Gateway`): `turret credentials`, `check`,
`rotate --wait` and `status` over the admin socket, an enforced max_age refusing with nothing
forwarded, fingerprints stable across restart; no canary in any answer, record or CLI output."""

from __future__ import annotations

import asyncio
import json
import os
import re
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from tests.admin.conftest import Served, eventually, write_served
from tests.conftest import Upstream
from tests.gateway import Canaries
from turret.credmodel import DAY
from turret.state import StateStore

POLICY = """credentials:
  gitea-token: {max_age: 90d, owner: alice, rotate_hint: "Gitea > Settings > Applications"}
  api-key: {max_age: 30d, warn_before: 5d, enforce_max_age: true}
"""


def with_checks(config: Path) -> None:
    """gitea gets a passing check, apikey a failing one (the fake answers 401), q none."""
    text = config.read_text()
    gitea = "auth: {bearer: gitea-token}\n"
    apikey = "value: api-key}}\n"
    text = text.replace(gitea, gitea + "    check: {path: /api/v1/user}\n")
    text = text.replace(apikey, apikey + "    check: {path: /status/401}\n")
    config.write_text(text + POLICY)


@pytest.fixture
def aged_for(leak_check: Canaries) -> Callable[[Served, str, float], None]:
    """Record in the state store that credential NAME has had its value for DAYS days."""

    def age(s: Served, name: str, days: float) -> None:
        assert s.options.state_dir is not None
        store = StateStore.open(Path(s.options.state_dir))
        try:
            value = leak_check.credentials[name].encode()
            fp = store.fingerprint_key.fingerprint(value)
            store.credentials.observe(name, fp, time.time() - days * DAY)
        finally:
            store.close()

    return age


@pytest.fixture
async def keyed(
    upstream: Upstream, leak_check: Canaries, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Served]:
    """A Turret with key-age policy and health checks; not started (`aged_for` first)."""
    monkeypatch.delenv("STATE_DIRECTORY", raising=False)
    monkeypatch.delenv("LISTEN_FDS", raising=False)
    s = write_served(tmp_path, upstream, leak_check)
    with_checks(Path(s.options.config_path))
    yield s
    upstream.release.set()
    await s.finish(leak_check)


def records(s: Served, event: str) -> list[dict[str, str]]:
    return [r for r in s.audit() if r.get("TURRET_EVENT") == event]


async def test_credentials_cli_text_and_json(keyed: Served) -> None:
    await keyed.start()
    assert (await keyed.agent("/v1/proxy/gitea/api/v1/user"))[0] == 200
    code, out, err = await keyed.cli("credentials")
    assert code == 0 and not err
    header, *rows = out.splitlines()
    assert header.split()[:2] == ["CREDENTIAL", "FINGERPRINT"]
    line = next(r for r in rows if r.startswith("gitea-token"))
    assert re.search(r"\b[0-9a-f]{8}\b", line) and " ok " in line and line.endswith("gitea")
    assert "90d 0h 0m" in line and "never" not in line  # used just now
    code, out, _ = await keyed.cli("credentials", "--json")
    doc = {c["name"]: c for c in json.loads(out)["credentials"]}
    assert set(doc) == {"gitea-token", "api-key", "query-key", "basic-password"}
    gitea = doc["gitea-token"]
    assert re.fullmatch(r"[0-9a-f]{8}", gitea["fingerprint"])
    assert gitea["services"] == ["gitea"] and gitea["owner"] == "alice"
    assert gitea["max_age_seconds"] == 90 * DAY and gitea["state"] == "ok"
    assert gitea["last_used"] is not None  # flushed before the answer
    assert doc["query-key"]["last_used"] is None


async def test_fingerprints_stable_across_restart(keyed: Served) -> None:
    await keyed.start()
    first = json.loads((await keyed.cli("credentials", "--json"))[1])["credentials"]
    await keyed.restart()
    again = json.loads((await keyed.cli("credentials", "--json"))[1])["credentials"]
    assert [(c["name"], c["fingerprint"], c["first_seen"]) for c in first] == [
        (c["name"], c["fingerprint"], c["first_seen"]) for c in again
    ]
    assert records(keyed, "credential_rotated") == []


async def test_enforced_max_age_refuses_with_nothing_forwarded(
    keyed: Served, upstream: Upstream, aged_for: Callable[[Served, str, float], None]
) -> None:
    aged_for(keyed, "api-key", 40)
    aged_for(keyed, "gitea-token", 80)
    await keyed.start()
    for tcp in (False, True):
        status, doc = await keyed.agent("/v1/proxy/apikey/reflect", tcp=tcp)
        assert status == 503 and doc["error"]["code"] == "credential_unavailable"
    assert upstream.received == []
    assert (await keyed.agent("/v1/proxy/gitea/api/v1/user"))[0] == 200  # rotate-soon: served
    (overdue,) = records(keyed, "credential_overdue")
    assert overdue["TURRET_CREDENTIAL"] == "api-key" and overdue["PRIORITY"] == "3"
    (soon,) = records(keyed, "credential_rotate_soon")
    assert soon["TURRET_CREDENTIAL"] == "gitea-token" and soon["PRIORITY"] == "4"
    assert keyed.gateway is not None
    assert "1 credentials overdue" in keyed.gateway.status()
    code, out, _ = await keyed.cli("status")
    assert code == 0
    assert "credentials needing attention: api-key (overdue), gitea-token (rotate-soon)" in out
    code, out, _ = await keyed.cli("status", "--json")
    assert json.loads(out)["credentials_needing_attention"] == [
        {"name": "api-key", "state": "overdue"},
        {"name": "gitea-token", "state": "rotate-soon"},
    ]
    # The health check goes the same way: refused, nothing sent.
    code, out, _ = await keyed.cli("check", "apikey")
    assert code == 1 and "FAILED credential_unavailable" in out
    assert upstream.received[1:] == []


async def test_check_runs_against_the_upstream(keyed: Served, upstream: Upstream) -> None:
    await keyed.start()
    code, out, _ = await keyed.cli("check", "--all")
    assert code == 1  # apikey's check fails
    lines = {line.split()[0]: line for line in out.splitlines()[1:]}
    assert "ok" in lines["gitea"] and "200" in lines["gitea"]
    assert "FAILED unexpected_status" in lines["apikey"] and "401" in lines["apikey"]
    assert "skipped" in lines["q"]
    sent = {r.raw_path: r for r in upstream.received}
    assert sent["/api/v1/user"].headers["Authorization"].startswith("Bearer ")
    assert "X-Api-Key" in sent["/status/401"].headers
    code, out, _ = await keyed.cli("check", "gitea", "--json")
    doc = json.loads(out)
    assert code == 0 and doc["ok"] is True
    assert doc["checks"] == [
        {"service": "gitea", "check": "GET /api/v1/user -> 200", "ok": True, "status": 200,
         "error": None},
    ]  # fmt: skip
    assert "body" not in out and "Bearer" not in out  # the answer's body is never returned
    assert (await keyed.cli("check", "nosuch"))[0] == 1
    assert (await keyed.cli("check", "gitea", "--all"))[0] == 2
    (action, *_) = [r for r in records(keyed, "admin_action") if r["TURRET_ACTION"] == "check"]
    assert action["TURRET_OPERATOR_UID"] == str(os.getuid())


async def test_rotate_shows_what_and_how(keyed: Served) -> None:
    await keyed.start()
    code, out, _ = await keyed.cli("rotate", "gitea-token")
    assert code == 0
    assert "owner: alice" in out and "hint: Gitea > Settings > Applications" in out
    assert "used by: gitea" in out and "steps:" in out and "1. create a new value at gitea" in out
    assert "source: " in out
    code, out, err = await keyed.cli("rotate", "nosuch-token")
    assert code == 1 and "no credential" in err


async def test_rotate_wait_sees_the_new_value_after_reload(
    keyed: Served, leak_check: Canaries, upstream: Upstream
) -> None:
    await keyed.start()
    assert keyed.gateway is not None and keyed.gateway.state is not None
    state = keyed.gateway.state
    old = json.loads((await keyed.cli("credentials", "--json"))[1])["credentials"]
    old_fp = next(c["fingerprint"] for c in old if c["name"] == "gitea-token")
    rotate = asyncio.create_task(keyed.cli("rotate", "gitea-token", "--wait", "--timeout", "30"))
    await eventually(lambda: state.meta.get("rotating:gitea-token") is not None)
    new_value = f"CANARY-rotated-{os.urandom(8).hex()}"
    leak_check.watch([new_value])
    creds_dir = Path(keyed.options.credentials_dir or "")
    (creds_dir / "gitea-token").write_text(new_value + "\n")
    assert await keyed.gateway.reload()
    code, out, err = await rotate
    assert code == 0, err
    (loaded,) = [line for line in out.splitlines() if line.startswith("new value loaded")]
    assert loaded.startswith(f"new value loaded: {old_fp} -> ")
    new_fp = loaded.rsplit(" ", 1)[1]
    assert re.fullmatch(r"[0-9a-f]{8}", new_fp) and new_fp != old_fp
    assert re.search(r"^gitea\s+ok\s+200", out, re.MULTILINE)
    (rotated,) = records(keyed, "credential_rotated")
    assert rotated["TURRET_CREDENTIAL"] == "gitea-token"
    assert rotated["TURRET_OLD_FINGERPRINT"] == old_fp
    assert rotated["TURRET_NEW_FINGERPRINT"] == new_fp
    assert rotated["TURRET_OPERATOR_UID"] == str(os.getuid())
    # The check went out with the new value, and so do agents' requests from now on.
    assert upstream.received[-1].headers["Authorization"] == f"Bearer {new_value}"
    assert (await keyed.agent("/v1/proxy/gitea/api/v1/user"))[0] == 200
    assert upstream.received[-1].headers["Authorization"] == f"Bearer {new_value}"


async def test_rotate_wait_times_out_without_a_new_value(keyed: Served) -> None:
    await keyed.start()
    code, _, err = await keyed.cli("rotate", "gitea-token", "--wait", "--timeout", "0.3")
    assert code == 1 and "no new value of gitea-token loaded" in err


async def test_rotate_wait_rides_out_a_restart(keyed: Served, leak_check: Canaries) -> None:
    await keyed.start()
    assert keyed.gateway is not None and keyed.gateway.state is not None
    state = keyed.gateway.state
    rotate = asyncio.create_task(keyed.cli("rotate", "gitea-token", "--wait", "--timeout", "30"))
    await eventually(lambda: state.meta.get("rotating:gitea-token") is not None)
    new_value = f"CANARY-restarted-{os.urandom(8).hex()}"
    leak_check.watch([new_value])
    (Path(keyed.options.credentials_dir or "") / "gitea-token").write_text(new_value + "\n")
    await keyed.restart()  # systemd copies credentials at start: the usual way in
    code, out, err = await rotate
    assert code == 0, err
    assert re.search(r"^gitea\s+ok\s+200", out, re.MULTILINE)
    (rotated,) = records(keyed, "credential_rotated")
    assert rotated["TURRET_OPERATOR_UID"] == str(os.getuid())  # the announcement outlived it
