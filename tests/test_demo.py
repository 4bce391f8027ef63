"""The demo behind `make run` stays a working example."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from aiohttp import ClientSession
from aiohttp.test_utils import TestClient, TestServer

from turret.audit import Auditor, LineSink
from turret.config import load_config
from turret.demo.__main__ import demo_upstream
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
