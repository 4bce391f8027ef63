"""A Turret gateway in front of the catalog's fake services, checked for leaks afterwards.

Credentials are canaries; so is every qBittorrent session cookie the fake issues. When a test
ends, none of them, in any encoding the echo guard knows, may be in a response, an audit record
or a log line.
"""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientResponse, web
from aiohttp.test_utils import TestClient, TestServer

from tests.capabilities.fake_services import FakeState, room_state, start_fakes
from tests.conftest import assert_absent, record_responses
from turret.audit import Auditor, LineSink
from turret.auth import new_token, token_sha256
from turret.config import load_config
from turret.echo import encodings
from turret.runtime import RuntimeHolder, build_runtime
from turret.web.app import create_app

CREDENTIALS = {  # credential name -> the fake service kind that expects it
    "matrix-token": "matrix",
    "qbit-password": "qbittorrent",
    "pve-token": "proxmox",
    "gitea-token": "gitea",
    "ntfy-token": "ntfy",
    "ha-token": "homeassistant",
    "params-key": "",
}
AGENTS = ("opencode", "ops/alice", "rollout", "nobody")
# A room of version 12: "!" and 43 url-safe base64 characters, no ":server" part.
V12_ROOM = "!31hneApxJ_1o-63DmFrpeqnkFfWppnzWso1JvH3ogLM"


def capability_config(
    urls: dict[str, str], tokens: dict[str, str], extra: str = "", qbit_magnet: str = "{}"
) -> str:
    """Six catalog services, a user-defined capability, agents, a group and report mode."""
    digests = {a: token_sha256(t) for a, t in tokens.items()}
    return f"""
services:
  chat:
    kind: matrix
    url: {urls["matrix"]}
    auth: {{bearer: matrix-token}}
  qbit:
    kind: qbittorrent
    url: {urls["qbittorrent"]}
    auth: {{login: {{username: admin, password: {{credential: qbit-password}}}}}}
    magnet: {qbit_magnet}
  pve:
    kind: proxmox
    url: {urls["proxmox"]}
    node: pve1
    auth: {{header: {{name: Authorization, prefix: "PVEAPIToken=", value: pve-token}}}}
  git:
    kind: gitea
    url: {urls["gitea"]}
    auth: {{bearer: gitea-token}}
  push:
    kind: ntfy
    url: {urls["ntfy"]}
    auth: {{bearer: ntfy-token}}
  home:
    kind: homeassistant
    url: {urls["homeassistant"]}
    auth: {{bearer: ha-token}}
capabilities:
  git.close_issue:
    service: git
    description: Close an issue in one of my repositories
    params:
      repo: {{type: string, pattern: "[a-z0-9-]+"}}
      index: {{type: integer, minimum: 1}}
    request: {{method: PATCH, path: "/api/v1/repos/me/{{repo}}/issues/{{index}}",
               json: {{state: closed}}}}
    result: [number, state]
    log_params: [repo, index]
  push.note:
    service: push
    description: Publish a note (a free-text parameter that is logged, for the audit tests)
    params:
      text: {{type: string, max_length: 200}}
    request: {{method: POST, path: "/notes", json: {{text: "{{text}}"}}}}
    log_params: [text]
audit:
  params_key: params-key
agents:
  opencode:
    token_sha256: {digests["opencode"]}
    capabilities:
      - name: chat.send_message
        params:
          room_id: {{one_of: ["!ops:example.org", "{V12_ROOM}"]}}
          body: {{max_length: 2000}}
      - chat.read_messages
      - name: "pve.*"
      - git.*
      - push.publish
      - name: home.call_service
        params: {{domain: {{one_of: [light, switch]}}}}
      - qbit.*
    deny:
      - name: qbit.add_torrent
      - {{service: qbit, methods: [GET], paths: ["/api/v2/app/preferences"]}}
    proxy:
      - {{service: qbit, methods: [GET], paths: ["/api/v2/torrents/info", "/api/v2/app/*"]}}
  ops/alice:
    token_sha256: {digests["ops/alice"]}
  rollout:
    token_sha256: {digests["rollout"]}
    report: true
    capabilities:
      - name: chat.send_message
        params: {{room_id: {{one_of: ["!ops:example.org"]}}}}
    deny:
      - name: "pve.*"
  nobody:
    token_sha256: {digests["nobody"]}
groups:
  ops:
    agents: ["ops/*"]
    capabilities:
      - name: "qbit.*"
        params: {{category: {{one_of: [linux-isos]}}}}
      - name: pve.pct_status
        params: {{ctid: {{minimum: 100, maximum: 199}}}}
{extra}"""


@dataclass
class CapGateway:
    """Turret in front of the fakes; `call` and `explain` speak the capability API."""

    client: TestClient[web.Request, web.Application]
    fakes: FakeState
    tokens: dict[str, str]
    audit_path: Path
    canaries: dict[str, str]
    responses: list[bytes] = field(default_factory=list)

    def auth(self, agent: str = "opencode") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[agent]}"}

    async def call(
        self, name: str, params: Any = None, *, agent: str = "opencode", raw: bytes | None = None
    ) -> ClientResponse:
        data = raw if raw is not None else json.dumps(params or {}).encode()
        return await self.client.post(
            f"/v1/capabilities/{name}", data=data, headers=self.auth(agent)
        )

    async def explain(self, body: Any, agent: str = "opencode") -> ClientResponse:
        return await self.client.post("/v1/explain", json=body, headers=self.auth(agent))

    def audit(self) -> list[dict[str, str]]:
        text = self.audit_path.read_text() if self.audit_path.exists() else ""
        return [json.loads(line) for line in text.splitlines()]

    def assert_no_leaks(self, log_text: str) -> None:
        forms: set[bytes] = set()
        for value in [*self.canaries.values(), *self.fakes.issued]:
            forms |= encodings(value.encode())
        assert_absent(forms, self.audit_path, log_text, self.responses)


async def make_capability_gateway(
    tmp_path: Path,
    *,
    extra: str = "",
    sid_cookie: str = "SID",
    audit_path: Path | None = None,
    qbit_magnet: str = "{}",
) -> tuple[CapGateway, list[TestServer]]:
    """The gateway and the fake servers it talks to (the caller closes both)."""
    canaries = {name: f"CANARY-{name}-{secrets.token_hex(12)}" for name in CREDENTIALS}
    creds = tmp_path / "credentials"
    creds.mkdir()
    for name, value in canaries.items():
        (creds / name).write_text(value + "\n")
    state = FakeState({kind: canaries[n] for n, kind in CREDENTIALS.items() if kind})
    state.sid_cookie = sid_cookie
    for room in ("!ops:example.org", V12_ROOM):
        state.messages[room] = room_state(room)
    servers = await start_fakes(state)
    urls = {kind: str(s.make_url("")).rstrip("/") for kind, s in servers.items()}
    tokens = {agent: new_token() for agent in AGENTS}
    config = load_config(capability_config(urls, tokens, extra, qbit_magnet))
    audit_path = audit_path or tmp_path / "audit.jsonl"
    app = create_app(
        RuntimeHolder(build_runtime(config, str(creds))),
        Auditor(LineSink.open(str(audit_path))),
    )
    recorded = record_responses(app)
    client = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    gateway = CapGateway(client, state, tokens, audit_path, canaries, recorded)
    return gateway, list(servers.values())


@pytest.fixture
async def capgw(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> AsyncIterator[CapGateway]:
    """A gateway in front of all six fake services, checked for leaks when the test ends."""
    caplog.set_level(logging.DEBUG)
    gateway, servers = await make_capability_gateway(tmp_path)
    yield gateway
    await gateway.client.close()
    for server in servers:
        await server.close()
    gateway.assert_no_leaks(caplog.text)
