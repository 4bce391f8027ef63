"""Building a gateway whose services get their credentials from the cloud providers: the
source credentials written next to the canaries (and watched by the leak check), the
providers' clocks a `FakeTime`, the providers reachable for the tests."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path

from tests.gateway import Built, Canaries, build_gateway, fields_of
from tests.providers.minters import FakeTime
from turret.auth import token_sha256
from turret.providers.minting import MintingProvider
from turret.web.keys import CONTEXT


@dataclass
class CloudGateway(Built):
    """A gateway, its agent's token and the fake time its minting providers run on."""

    token: str
    time: FakeTime

    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def provider(self, service: str) -> MintingProvider:
        provider = self.client.app[CONTEXT].holder.current.providers[service]
        assert isinstance(provider, MintingProvider)
        return provider

    def records(self, event: str) -> list[dict[str, str]]:
        return [r for r in self.audit() if r.get("TURRET_EVENT") == event]


def agent_block(token: str, grants: str) -> str:
    return f"""
agents:
  bot:
    token_sha256: {token_sha256(token)}
{grants}"""


async def cloud_gateway(
    config: str,
    *,
    creds: Canaries,
    tmp_path: Path,
    sources: dict[str, str],
    token: str,
    time: FakeTime,
) -> CloudGateway:
    """A gateway over `config`, with each of `sources` (credential name -> value) written into
    the credentials directory and watched by the leak check."""
    directory = creds.write(tmp_path / "credentials")
    for name, value in sources.items():
        (directory / name).write_text(value + "\n")
    creds.watch(list(sources.values()))
    built = await build_gateway(
        config,
        creds=creds,
        audit_path=tmp_path / "audit.jsonl",
        credentials_dir=directory,
        hooks=time.hooks(),
    )
    return CloudGateway(**fields_of(built), token=token, time=time)


def random_value(name: str) -> str:
    return f"CANARY-{name}-{secrets.token_hex(10)}"
