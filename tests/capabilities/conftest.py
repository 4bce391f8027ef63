"""A Turret gateway in front of the catalog's fake services, checked for leaks afterwards.

Credentials are the run's canaries; every agent token and every qBittorrent session cookie the
fake issues joins them. When a test ends, none of them, in any encoding the echo guard knows, may
be in a response, an audit record or a log line.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestServer

from tests.capabilities.fake_services import FakeState, room_state, start_fakes
from tests.gateway import Built, Canaries, build_gateway, fields_of
from turret.auth import token_sha256

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
class CapGateway(Built):
    """Turret in front of the fakes; `call` and `explain` speak the capability API."""

    fakes: FakeState
    tokens: dict[str, str]

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


async def make_capability_gateway(
    tmp_path: Path,
    *,
    creds: Canaries,
    extra: str = "",
    sid_cookie: str = "SID",
    audit_path: Path | None = None,
    qbit_magnet: str = "{}",
) -> tuple[CapGateway, list[TestServer]]:
    """The gateway and the fake servers it talks to (the caller closes the servers; the
    `leak_check` fixture closes and checks the gateway)."""
    state = FakeState({kind: creds.credentials[n] for n, kind in CREDENTIALS.items() if kind})
    state.sid_cookie = sid_cookie
    creds.watch(state.issued)
    for room in ("!ops:example.org", V12_ROOM):
        state.messages[room] = room_state(room)
    servers = await start_fakes(state)
    urls = {kind: str(s.make_url("")).rstrip("/") for kind, s in servers.items()}
    tokens = {agent: creds.mint() for agent in AGENTS}
    built = await build_gateway(
        capability_config(urls, tokens, extra, qbit_magnet),
        creds=creds,
        audit_path=audit_path or tmp_path / "audit.jsonl",
        credentials_dir=creds.write(tmp_path / "credentials"),
    )
    gateway = CapGateway(**fields_of(built), fakes=state, tokens=tokens)
    return gateway, list(servers.values())


@pytest.fixture
async def capgw(tmp_path: Path, leak_check: Canaries) -> AsyncIterator[CapGateway]:
    """A gateway in front of all six fake services, checked for leaks when the test ends."""
    gateway, servers = await make_capability_gateway(tmp_path, creds=leak_check)
    yield gateway
    await gateway.client.close()
    for server in servers:
        await server.close()
