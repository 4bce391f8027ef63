"""Turret with human approval: the capability gateway in front of the catalog's fakes, a state
store, a controlled wall clock, and the admin app on a unix socket, as one `Desk`.

`ops/alice` may close issues only with approval (`approval: required`) and publish notes that
start with "prod" only with approval (`approval: {when: ...}`); `opencode` may close issues
outright. The operator is told through `push.publish` (the fake ntfy). `Desk.restart()` builds
a new Turret on the same state directory, as a restart would. Every answer, audit record, CLI
output and the state directory are checked for the canaries and agent tokens at the end.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestServer

from tests.admin.conftest import admin_cli, admin_request
from tests.capabilities.conftest import AGENTS, CREDENTIALS, capability_config
from tests.capabilities.fake_services import FakeState, start_fakes
from tests.gateway import Built, Canaries, build_gateway
from turret.admin import Facts
from turret.audit import Auditor, LineSink
from turret.counters import RequestCounters
from turret.httpserver import TurretRunner
from turret.listeners import listen_admin
from turret.runtime import RuntimeHolder
from turret.state import StateStore
from turret.web import admin_approvals
from turret.web.admin import create_admin_app
from turret.web.keys import CONTEXT, STATS

APPROVAL_CONFIG = """\
  approvers:
    agents: [ops/alice]
    capabilities:
      - name: git.close_issue
        approval: required
      - name: push.note
        approval: {when: {text: {prefix: prod}}}
approvals:
  ttl: 15m
  notify: {capability: push.publish, params: {topic: ops}}
"""
CLOSE = "git.close_issue"
ISSUE = {"repo": "infra", "index": 7}


class Clock:
    """The wall clock approvals expire by: real time, moved on by the test."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


@dataclass
class View:
    """What the admin app reads of a running Turret, without a whole `Gateway`."""

    holder: RuntimeHolder
    auditor: Auditor
    state: StateStore | None

    def facts(self) -> Facts:
        return Facts("test", 0.0, "", "none", "file", 0)

    def counters(self) -> RequestCounters:
        return RequestCounters()


@dataclass
class Desk:
    """Turret with approvals: the agents' gateway, the admin socket, the fakes."""

    tmp: Path
    creds: Canaries
    fakes: FakeState
    servers: dict[str, TestServer]
    tokens: dict[str, str]
    clock: Clock = field(default_factory=Clock)
    gw: Built | None = None
    state: StateStore | None = None
    runner: TurretRunner | None = None
    seen: list[str] = field(default_factory=list)

    @property
    def admin_socket(self) -> str:
        return str(self.tmp / "admin.sock")

    @property
    def audit_path(self) -> Path:
        return self.tmp / "audit.jsonl"

    async def start(self, extra: str = APPROVAL_CONFIG) -> None:
        urls = {kind: str(s.make_url("")).rstrip("/") for kind, s in self.servers.items()}
        (self.tmp / "state").mkdir(mode=0o700, exist_ok=True)
        self.state = StateStore.open(self.tmp / "state")
        auditor = Auditor(LineSink.open(str(self.audit_path)))
        self.gw = await build_gateway(
            capability_config(urls, self.tokens, extra),
            creds=self.creds,
            audit_path=self.audit_path,
            credentials_dir=self.creds.write(self.tmp / "credentials"),
            auditor=auditor,
            state=self.state,
            wall=self.clock,
        )
        assert self.gw.client.app is not None
        holder = self.gw.client.app[CONTEXT].holder
        admin_app = create_admin_app(View(holder, auditor, self.state))
        wall: Callable[[], float] = self.clock
        admin_app[admin_approvals.WALL] = wall
        self.runner = TurretRunner(admin_app, max_connections=16, access_log=None)
        await self.runner.setup()
        await listen_admin(self.runner, self.admin_socket, None)

    async def stop(self) -> None:
        assert self.gw is not None and self.runner is not None and self.state is not None
        await self.gw.client.close()
        await self.runner.cleanup()
        self.state.close()

    async def restart(self) -> None:
        """Stop, then start a new Turret on the same config and state directory."""
        await self.stop()
        await self.start()

    def headers(self, agent: str = "ops/alice", token: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {token or self.tokens[agent]}"}

    async def call(
        self, name: str = CLOSE, params: Any = None, *, agent: str = "ops/alice",
        token: str | None = None,
    ) -> tuple[int, Any]:  # fmt: skip
        """A capability call as `agent` (or with `token`): status and JSON."""
        assert self.gw is not None
        body = json.dumps(ISSUE if params is None else params)
        resp = await self.gw.client.post(
            f"/v1/capabilities/{name}", data=body, headers=self.headers(agent, token)
        )
        return resp.status, await resp.json()

    async def read(
        self, approval_id: str, *, wait: int | str | None = None, agent: str = "ops/alice",
        token: str | None = None,
    ) -> tuple[int, Any]:  # fmt: skip
        """`GET /v1/approvals/{id}[?wait=WAIT]` as `agent` (or with `token`): status, JSON."""
        assert self.gw is not None
        query = "" if wait is None else f"?wait={wait}"
        resp = await self.gw.client.get(
            f"/v1/approvals/{approval_id}{query}", headers=self.headers(agent, token)
        )
        return resp.status, await resp.json()

    async def mint(self, agent: str = "ops/alice") -> tuple[str, str]:
        """A token derived from `agent`'s (watched by the leak check) and its id."""
        assert self.gw is not None
        body = {"ttl": "1h", "capabilities": [CLOSE]}
        resp = await self.gw.client.post("/v1/tokens", json=body, headers=self.headers(agent))
        doc = await resp.json()
        assert resp.status == 201, doc
        self.creds.tokens.append(doc["token"])
        return doc["token"], doc["id"]

    async def admin(self, method: str, path: str, body: object = None) -> tuple[int, Any]:
        """A request on the admin socket: status and JSON."""
        return await admin_request(self.admin_socket, self.seen, method, path, body)

    async def approve(self, approval_id: str, *, deny: bool = False) -> tuple[int, Any]:
        action = "deny" if deny else "approve"
        return await self.admin("POST", f"/v1/admin/approvals/{approval_id}/{action}")

    async def cli(self, *args: str) -> tuple[int, str, str]:
        """`turret ARGS --admin-socket SOCKET` in a child process: exit status and output."""
        return await admin_cli(self.admin_socket, self.seen, *args)

    def audit(self, event: str | None = None) -> list[dict[str, Any]]:
        records = [json.loads(line) for line in self.audit_path.read_text().splitlines()]
        return [r for r in records if event is None or r["TURRET_EVENT"] == event]

    def in_flight(self) -> int:
        """Requests the agents' app is answering now."""
        assert self.gw is not None and self.gw.client.app is not None
        return self.gw.client.app[STATS].in_flight

    def upstream(self, service: str = "gitea") -> int:
        """How many requests the fake `service` received."""
        return len(self.fakes.requests(service))

    def state_files(self) -> list[tuple[str, bytes]]:
        directory = self.tmp / "state"
        return [(str(p), p.read_bytes()) for p in directory.iterdir() if p.is_file()]


async def open_desk(tmp: Path, creds: Canaries) -> Desk:
    """A started `Desk` (the caller closes it with `close_desk`)."""
    fakes = FakeState({kind: creds.credentials[n] for n, kind in CREDENTIALS.items() if kind})
    creds.watch(fakes.issued)
    servers = await start_fakes(fakes)
    tokens = {agent: creds.mint() for agent in AGENTS}
    desk = Desk(tmp, creds, fakes, servers, tokens)
    await desk.start()
    return desk


async def close_desk(desk: Desk) -> None:
    """Stop it, close the fakes, check the admin answers, CLI output and state directory."""
    await desk.stop()
    for server in desk.servers.values():
        await server.close()
    desk.creds.assert_absent(
        [("admin answers and CLI output", "\n".join(desk.seen)), *desk.state_files()]
    )


@pytest.fixture
async def desk(leak_check: Canaries) -> AsyncIterator[Desk]:
    """A `Desk` in a short temporary directory (unix socket paths are limited to 108 bytes)."""
    tmp = Path(tempfile.mkdtemp(prefix="turret-apr-"))
    d = await open_desk(tmp, leak_check)
    yield d
    await close_desk(d)
    shutil.rmtree(tmp, ignore_errors=True)
