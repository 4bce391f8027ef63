"""Turret in front of real qBittorrent and real Synapse, checked for leaks afterwards.

The peers run once per session (a separate qBittorrent is started for a test that gets its
address banned). Each test builds its own gateways; when it ends, no credential (the WebUI
password, the Matrix access token) and no session cookie qBittorrent issued to Turret may be in
a response, an audit record or a log line, in any encoding the echo guard knows.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientResponse, web
from aiohttp.test_utils import TestClient, TestServer

from tests.gateway import record_responses
from tests.real.peers import (
    Qbittorrent,
    Synapse,
    have_qbittorrent,
    have_synapse,
    qbittorrent,
    synapse,
)
from turret.audit import Auditor, LineSink
from turret.auth import new_token, token_sha256
from turret.config import load_config
from turret.echo import encodings
from turret.providers.build import build_runtime
from turret.providers.login import LoginProvider, LoginState
from turret.runtime import RuntimeHolder
from turret.web.app import create_app
from turret.web.keys import CONTEXT

# Anything shaped like a qBittorrent session cookie, whatever its value.
COOKIE_SHAPE = re.compile(rb"(?:\bSID|QBT_SID_[0-9]+)=")


@pytest.fixture(scope="session")
def qbit(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Qbittorrent]:
    """qBittorrent with the default ban threshold (5 failed logins), for the whole session."""
    if not have_qbittorrent():
        pytest.skip("qbittorrent-nox is not installed (`make test` installs it with apt)")
    with qbittorrent(tmp_path_factory.mktemp("qbittorrent")) as peer:
        yield peer


@pytest.fixture
def banning_qbit(tmp_path: Path) -> Iterator[Qbittorrent]:
    """A qBittorrent of its own that bans an address after one failed login."""
    if not have_qbittorrent():
        pytest.skip("qbittorrent-nox is not installed (`make test` installs it with apt)")
    with qbittorrent(tmp_path / "banning-qbittorrent", max_fails=1) as peer:
        yield peer


@pytest.fixture(scope="session")
def matrix(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Synapse]:
    """Synapse with one user and two rooms (default room version, and version 10)."""
    if not have_synapse():
        pytest.skip("Synapse is not installed in .venv-synapse (`make setup` installs it)")
    with synapse(tmp_path_factory.mktemp("synapse")) as peer:
        yield peer


def qbit_service(name: str, url: str, credential: str) -> str:
    return f"""\
  {name}:
    kind: qbittorrent
    url: {url}
    auth: {{login: {{username: admin, password: {{credential: {credential}}}}}}}
"""


def matrix_service(name: str, url: str) -> str:
    return f"""\
  {name}:
    kind: matrix
    url: {url}
    auth: {{bearer: matrix-token}}
"""


@dataclass
class RealGateway:
    """Turret in front of real peers, with one agent granted every capability of them."""

    app: web.Application
    client: TestClient[web.Request, web.Application]
    token: str
    audit_path: Path
    secrets: list[str]
    responses: list[bytes] = field(default_factory=list)

    async def call(self, name: str, params: Any) -> ClientResponse:
        return await self.client.post(
            f"/v1/capabilities/{name}",
            data=json.dumps(params).encode(),
            headers={"Authorization": f"Bearer {self.token}"},
        )

    def login_providers(self) -> list[LoginProvider]:
        """The login providers of the runtime the gateway serves now."""
        providers = self.app[CONTEXT].holder.current.providers.values()
        return [p for p in providers if isinstance(p, LoginProvider)]

    def login_state(self, service: str = "qbit") -> LoginState:
        """The login state of `service`."""
        (state,) = [p.state for p in self.login_providers() if p.name == service]
        return state

    def set_login_clock(self, clock: Callable[[], float]) -> None:
        """Drive every login's backoff by `clock`."""
        for provider in self.login_providers():
            provider.state.clock = clock

    def audit(self) -> list[dict[str, str]]:
        text = self.audit_path.read_text() if self.audit_path.is_file() else ""
        return [json.loads(line) for line in text.splitlines()]

    def assert_no_leaks(self, log_text: str) -> None:
        """No credential and no session cookie, in any encoding, and nothing cookie-shaped."""
        # The cookies qBittorrent issued to Turret are known only inside Turret's login state.
        cookies = [v for p in self.login_providers() for v in p.guarded()]
        forms: set[bytes] = set()
        for value in [*self.secrets, *cookies]:
            forms |= encodings(value.encode())
        audit = self.audit_path.read_bytes() if self.audit_path.is_file() else b""
        for data in [audit, log_text.encode(), *self.responses]:
            for form in forms:
                assert form not in data, f"secret leaked: {data[:300]!r}"
            assert not COOKIE_SHAPE.search(data), data[:300]


Build = Callable[[str, dict[str, str], list[str]], Awaitable[RealGateway]]


@pytest.fixture
async def gateways(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> AsyncIterator[Build]:
    """Build gateways: `await build(services_yaml, credentials, grants)`; closed and checked
    for leaks when the test ends."""
    caplog.set_level(logging.DEBUG)
    built: list[RealGateway] = []

    async def build(services: str, credentials: dict[str, str], grants: list[str]) -> RealGateway:
        root = tmp_path / f"gateway-{len(built)}"
        creds = root / "credentials"
        creds.mkdir(parents=True)
        for name, value in credentials.items():
            (creds / name).write_text(value + "\n")
        token = new_token()
        config = load_config(
            f"services:\n{services}agents:\n  agent:\n    token_sha256: {token_sha256(token)}\n"
            f"    capabilities: {json.dumps(grants)}\n"
        )
        audit_path = root / "audit.jsonl"
        app = create_app(
            RuntimeHolder(build_runtime(config, str(creds))),
            Auditor(LineSink.open(str(audit_path))),
        )
        recorded = record_responses(app)
        client = TestClient(TestServer(app, host="127.0.0.1"))
        await client.start_server()
        gateway = RealGateway(app, client, token, audit_path, list(credentials.values()), recorded)
        built.append(gateway)
        return gateway

    yield build
    for gateway in built:
        await gateway.client.close()
    for gateway in built:
        gateway.assert_no_leaks(caplog.text)
