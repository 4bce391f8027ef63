"""A Turret in front of the fake GitHub: a capability whose token is scoped to the repository
it names, and a proxied service with a fixed scope (for the echo and exfiltration guards)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestServer

from tests.gateway import Built, Canaries, build_gateway
from tests.providers.fake_github import APP_ID, INSTALLATION, FakeGitHub, new_key, serve
from tests.providers.minters import FakeTime
from turret.auth import token_sha256

PEM_CREDENTIAL = "github-app-key"


def github_config(
    api: str, token: str, *, issuer: str = f"app_id: {APP_ID}", api_url: str | None = None
) -> str:
    return f"""
providers:
  gh-app:
    type: github_app
    {issuer}
    installation_id: {INSTALLATION}
    private_key: {PEM_CREDENTIAL}
    api_url: {api_url or api}
services:
  gh:
    url: {api}
    auth:
      provider: gh-app
      scope:
        repositories: ["{{repo}}"]
        permissions: {{metadata: read, issues: write}}
  gh-echo:
    url: {api}
    auth: {{provider: gh-app, scope: {{repositories: [tools]}}}}
capabilities:
  gh.repo:
    service: gh
    description: Read one repository
    params:
      repo: {{type: string, pattern: "^[a-z0-9-]+$"}}
    request: {{method: GET, path: "/repos/octo/{{repo}}"}}
    result: [name, private]
  gh.loose:
    service: gh
    description: Read one repository, its name unchecked by the schema
    params:
      repo: {{type: string}}
    request: {{method: GET, path: "/repos/octo/{{repo}}"}}
agents:
  bot:
    token_sha256: {token_sha256(token)}
    capabilities: ["gh.*"]
    proxy:
      - service: gh-echo
        methods: [GET, POST]
        paths: ["/echo", "/repos/octo/*"]
"""


@dataclass
class GitHubGateway:
    """Turret, the fake GitHub it mints from, the agent's token and the controlled time."""

    built: Built
    fake: FakeGitHub
    server: TestServer
    token: str
    time: FakeTime
    pem: str
    config: str
    credentials_dir: Path

    async def call(self, repo: str, capability: str = "gh.repo") -> tuple[int, Any]:
        resp = await self.built.client.post(
            f"/v1/capabilities/{capability}",
            json={"repo": repo},
            headers={"Authorization": f"Bearer {self.token}"},
        )
        return resp.status, await resp.json()

    async def proxy(self, target: str, **kwargs: Any) -> tuple[int, bytes]:
        resp = await self.built.client.get(
            "/v1/proxy/gh-echo" + target,
            headers={"Authorization": f"Bearer {self.token}"},
            **kwargs,
        )
        return resp.status, await resp.read()

    def audit(self, event: str) -> list[dict[str, str]]:
        return [r for r in self.built.audit() if r["TURRET_EVENT"] == event]


async def github_gateway(
    creds: Canaries,
    tmp_path: Path,
    creds_dir: Path,
    *,
    issuer: str | None = None,
    api_host: str | None = None,
) -> AsyncIterator[GitHubGateway]:
    """Build it; the PEM and every token the fake issues are watched by the leak check."""
    time = FakeTime()
    pem, public = new_key()
    (creds_dir / PEM_CREDENTIAL).write_text(pem)
    fake = FakeGitHub(public, lambda: time.wall)
    if issuer is not None:
        fake.issuer = issuer.partition(": ")[2]
    creds.watch([pem])
    creds.watch(fake.tokens)  # a live list: tokens issued later are watched too
    async for server in serve(fake):
        api = str(server.make_url("")).rstrip("/")
        token = creds.mint()
        api_url = api.replace("127.0.0.1", api_host) if api_host else None
        config = github_config(
            api, token, api_url=api_url, **({"issuer": issuer} if issuer else {})
        )
        built = await build_gateway(
            config,
            creds=creds,
            audit_path=tmp_path / "audit.jsonl",
            credentials_dir=creds_dir,
            hooks=time.hooks(),
        )
        yield GitHubGateway(built, fake, server, token, time, pem, config, creds_dir)
