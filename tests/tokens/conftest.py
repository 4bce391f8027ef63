"""A gateway with a state store and a wall clock the test moves: derived tokens end to end."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientResponse

from tests.conftest import Upstream, upstream_services
from tests.gateway import Built, Canaries, build_gateway, fields_of
from turret.audit import Auditor
from turret.auth import token_sha256
from turret.state import StateStore

CAPABILITIES = """\
capabilities:
  gitea.create_issue:
    service: gitea
    description: Open an issue in one of my repositories
    params:
      repo: {type: string, pattern: "[a-z-]{1,32}"}
      title: {type: string, max_length: 200}
    request: {method: POST, path: "/api/v1/repos/me/{repo}/issues", json: {title: "{title}"}}
  gitea.read_user:
    service: gitea
    description: Who the bot is
    request: {method: GET, path: "/api/v1/user"}
"""


def lease_config(upstream_url: str, tokens: dict[str, str], extra: str = "") -> str:
    """Agents: `alice` (proxy on her repos, both capabilities, issues only in two repos),
    `nod` (may_derive: false), `brief` (max_ttl: 10m); `extra` goes under `agents:`."""
    return f"""
services:
{upstream_services(upstream_url)}\
{CAPABILITIES}\
agents:
  alice:
    token_sha256: {token_sha256(tokens["alice"])}
    proxy:
      - service: gitea
        methods: [GET, POST]
        paths: ["/api/v1/repos/me/**", "/api/v1/user"]
      - service: apikey
        methods: [GET]
        paths: ["/reflect"]
    capabilities:
      - gitea.read_user
      - name: gitea.create_issue
        params:
          repo: {{one_of: [turret, other]}}
          title: {{max_length: 100}}
  nod:
    token_sha256: {token_sha256(tokens["nod"])}
    may_derive: false
    proxy:
      - service: gitea
        methods: [GET]
        paths: ["/api/v1/user"]
  brief:
    token_sha256: {token_sha256(tokens["brief"])}
    max_ttl: 10m
    proxy:
      - service: gitea
        methods: [GET]
        paths: ["/api/v1/user"]
{extra}"""


@dataclass
class Wall:
    """The wall clock the gateway reads for token expiry."""

    now: float = field(default_factory=time.time)

    def __call__(self) -> float:
        return self.now


@dataclass
class LeaseGateway(Built):
    """A gateway with the state store, the agents' tokens and the wall clock."""

    upstream: Upstream
    state: StateStore
    tokens: dict[str, str]
    wall: Wall

    async def call(
        self, method: str, target: str, token: str, **kwargs: Any
    ) -> ClientResponse:
        headers = {"Authorization": f"Bearer {token}", **kwargs.pop("headers", {})}
        return await self.client.session.request(
            method, self.url(target), headers=headers, allow_redirects=False, **kwargs
        )

    async def mint(self, token: str, body: dict[str, Any]) -> ClientResponse:
        """`POST /v1/tokens` with `token`; a minted token joins the leak check's secrets."""
        resp = await self.call("POST", "/v1/tokens", token, json=body)
        if resp.status == 201:
            self.creds.tokens.append((await resp.json())["token"])
        return resp

    async def minted(self, token: str, body: dict[str, Any]) -> tuple[str, str]:
        """A new derived token and its id (the mint must succeed)."""
        resp = await self.mint(token, body)
        payload = await resp.json()
        assert resp.status == 201, payload
        return payload["token"], payload["id"]


async def make_lease_gateway(
    upstream: Upstream,
    creds: Canaries,
    tmp_path: Path,
    *,
    state: StateStore,
    wall: Wall | None = None,
    tokens: dict[str, str] | None = None,
    extra: str = "",
    auditor: Auditor | None = None,
) -> LeaseGateway:
    """A gateway over `lease_config` with `state` (checked for leaks by the `leak_check`)."""
    tokens = tokens or {name: creds.mint() for name in ("alice", "nod", "brief")}
    wall = wall or Wall()
    built = await build_gateway(
        lease_config(upstream.url, tokens, extra),
        creds=creds,
        audit_path=tmp_path / "audit.jsonl",
        credentials_dir=creds.write(tmp_path / "credentials"),
        state=state,
        wall=wall,
        auditor=auditor,
    )
    fields = fields_of(built)
    return LeaseGateway(**fields, upstream=upstream, state=state, tokens=tokens, wall=wall)


@pytest.fixture
def state(tmp_path: Path) -> AsyncIterator[StateStore] | Any:
    """A state store in a fresh directory, closed after the test."""
    directory = tmp_path / "state"
    directory.mkdir(mode=0o700)
    store = StateStore.open(directory)
    yield store
    store.close()


@pytest.fixture
async def lgw(
    upstream: Upstream, leak_check: Canaries, tmp_path: Path, state: StateStore
) -> LeaseGateway:
    """The lease gateway, leak-checked."""
    return await make_lease_gateway(upstream, leak_check, tmp_path, state=state)
