"""The demo behind `make run` stays a working example."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import sys
from importlib import resources
from pathlib import Path
from typing import Any

from aiohttp import ClientSession, UnixConnector
from aiohttp.test_utils import TestClient, TestServer

from tests.admin.conftest import eventually, free_port
from turret.audit import Auditor, LineSink
from turret.config import load_config
from turret.demo.__main__ import LEASE, demo_upstream
from turret.providers.build import build_runtime
from turret.runtime import RuntimeHolder
from turret.web.app import create_app


async def test_demo_config_and_upstream_work_together(tmp_path: Path) -> None:
    secret, token = "CANARY-demo-secret-0123456789", "turret_demo-agent-token"
    (tmp_path / "notes-api-token").write_text(secret)
    (tmp_path / "demo-agent-token").write_text(token)
    async with TestServer(demo_upstream(secret), host="127.0.0.1") as upstream:
        text = (resources.files("turret.demo") / "demo.yaml").read_text()
        config = load_config(text.replace("http://127.0.0.1:8422", str(upstream.make_url(""))))
        app = create_app(
            RuntimeHolder(build_runtime(config, str(tmp_path))),
            Auditor(LineSink.open(str(tmp_path / "audit.jsonl"))),
        )
        async with TestClient(TestServer(app, host="127.0.0.1")) as client:
            auth = {"Authorization": f"Bearer {token}"}
            notes = await client.get("/v1/proxy/notes/api/notes", headers=auth)
            assert notes.status == 200 and (await notes.json())[0]["id"] == 1
            echo = await client.get("/v1/proxy/notes/api/debug/echo", headers=auth)
            assert (await echo.json())["headers"]["Authorization"] == "[REDACTED]"
            added = await client.post(
                "/v1/capabilities/notes.add", json={"text": "from a capability"}, headers=auth
            )
            assert await added.json() == {"ok": True, "result": {"id": 2}}
            denied = await client.delete("/v1/proxy/notes/api/notes/1", headers=auth)
            assert denied.status == 403
        async with ClientSession() as session:
            direct = await session.get(upstream.make_url("/api/notes"))
            assert direct.status == 401  # the demo upstream insists on its credential
    assert secret not in (tmp_path / "audit.jsonl").read_text()


async def _read_walkthrough(stdout: asyncio.StreamReader) -> str:
    """The demo's printed walkthrough: everything up to its last line."""
    lines: list[str] = []
    while not lines or not lines[-1].startswith("Audit records are printed below"):
        line = await stdout.readline()
        assert line, f"the demo ended early: {''.join(lines)}"
        lines.append(line.decode())
    return "".join(lines)


async def test_demo_prints_the_operator_walkthrough_and_serves_its_admin_socket() -> None:
    port, upstream_port = free_port(), free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "turret.demo", "--port", str(port),
        "--upstream-port", str(upstream_port),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        text = await _read_walkthrough(proc.stdout)
        token = re.search(r"demo agent token: (turret_\S+)", text)
        socket = re.search(r"turret status --admin-socket (\S+/admin\.sock)\n", text)
        assert token and socket, text
        admin = f"--admin-socket {socket[1]}"
        base = f"http://127.0.0.1:{port}"
        for line in (
            f"turret tokens {admin}",
            f'turret revoke demo --reason "trying it out" {admin}',
            f"turret unrevoke demo {admin}",
            f"TURRET_TOKEN={token[1]} turret mcp --url {base}",
            f"claude mcp add turret -e TURRET_TOKEN={token[1]} -- turret mcp --url {base}",
            f"-d '{json.dumps(LEASE)}' {base}/v1/tokens",
            f"turret approvals {admin}",
            f"turret approve <approval_id> {admin}",
            f"turret credentials {admin}",
            f"turret check --all {admin}",
            f"turret metrics {admin}",
        ):
            assert line in text, line
        await eventually(lambda: Path(socket[1]).exists())
        status, doc = await _admin_status(socket[1])
        assert status == 200 and doc["agents"] == {"count": 1, "revoked": []}
        assert doc["state_store"] is True and doc["sealed"] is None
        assert await _whoami(base, token[1]) == (200, None)
        # The walkthrough's commands, as printed, as this (non-root) user.
        assert await _turret("revoke", "demo", "--reason", "trying it out", *admin.split()) == 0
        assert await _whoami(base, token[1]) == (401, "revoked")
        assert await _turret("unrevoke", "demo", *admin.split()) == 0
        assert await _whoami(base, token[1]) == (200, None)
        # The approval walkthrough: held, listed, approved, then performed on the agent's read.
        held = await _agent(base, token[1], "POST", "/v1/capabilities/notes.remove", {"id": 1})
        assert held[0] == 202, held
        approval_id = held[1]["pending"]["approval_id"]
        code, listed = await _turret_out("approvals", "--json", *admin.split())
        assert code == 0 and approval_id in listed
        assert await _turret("approve", approval_id, *admin.split()) == 0
        done = await _agent(base, token[1], "GET", f"/v1/approvals/{approval_id}?wait=5")
        assert done[0] == 200 and done[1]["result"] == {"id": 1, "removed": True}, done
        # The operator's other new commands, as printed, with nothing secret in their output.
        for command in (["credentials"], ["check", "--all"], ["metrics"]):
            code, out = await _turret_out(*command, *admin.split())
            assert code == 0, (command, out)
            assert token[1] not in out and "demo-turret_" not in out
    finally:
        proc.send_signal(signal.SIGINT)
        await proc.communicate()
    assert not Path(socket[1]).parent.exists()  # the demo cleans up after itself


async def _turret(*args: str) -> int | None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "turret", *args,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    return await proc.wait()


async def _turret_out(*args: str) -> tuple[int | None, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "turret", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await proc.communicate()
    return proc.returncode, out.decode()


async def _agent(
    base: str, token: str, method: str, path: str, body: object = None
) -> tuple[int, Any]:
    async with (
        ClientSession() as session,
        session.request(
            method, f"{base}{path}", json=body, headers={"Authorization": f"Bearer {token}"}
        ) as resp,
    ):
        return resp.status, await resp.json()


async def _whoami(base: str, token: str) -> tuple[int, str | None]:
    async with (
        ClientSession() as session,
        session.get(f"{base}/v1/whoami", headers={"Authorization": f"Bearer {token}"}) as resp,
    ):
        doc = await resp.json()
        return resp.status, doc.get("error", {}).get("code")


async def _admin_status(path: str) -> tuple[int, Any]:
    async with (
        ClientSession(connector=UnixConnector(path)) as session,
        session.get("http://turret/v1/admin/status") as resp,
    ):
        return resp.status, await resp.json()
