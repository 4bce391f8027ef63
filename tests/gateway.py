"""The one way tests build a Turret gateway, and the one set of canaries its leak check uses.

`Canaries` holds every secret a test run must never see come back out of Turret: the
credential canaries (written as a systemd credentials directory), every agent token a builder
mints, and values issued while a test runs (the fakes' qBittorrent session cookies).
`build_gateway` loads a config, builds the runtime over those credentials, creates the app, records
every response it sends and serves it on loopback (behind `TurretRunner` when a connection cap is
asked for); the gateway is registered with the canaries, and the `leak_check` fixture closes and
checks every registered gateway when the test ends.
"""

from __future__ import annotations

import dataclasses
import json
import secrets
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.abc import AbstractResolver
from aiohttp.test_utils import TestClient, TestServer
from aiohttp.web_runner import AppRunner
from yarl import URL

from turret.audit import Auditor, LineSink
from turret.auth import new_token
from turret.config import load_config
from turret.echo import encodings
from turret.httpserver import TurretRunner
from turret.providers.build import build_runtime
from turret.providers.minting import Hooks
from turret.runtime import RuntimeHolder
from turret.state import StateStore
from turret.web.app import create_app

# Every credential any test config references (the proxy suite's and the capability catalog's).
CREDENTIAL_NAMES = (
    "gitea-token",
    "basic-password",
    "api-key",
    "query-key",
    "bot-token",
    "matrix-token",
    "qbit-password",
    "pve-token",
    "ntfy-token",
    "ha-token",
    "params-key",
    "chain-key",
)


@dataclass
class Canaries:
    """Every secret of the run: credentials for the session; tokens and issued values per test.

    Tokens and issued values are forgotten when the next test's leak check starts: a gateway
    lives within one test, so the check stays linear in that test's secrets.
    """

    credentials: dict[str, str]
    tokens: list[str] = field(default_factory=list)
    issued: list[Sequence[str]] = field(default_factory=list)  # live views, read at check time
    built: list[Built] = field(default_factory=list)
    checking: bool = False  # set by the `leak_check` fixture while a test runs

    @classmethod
    def random(cls) -> Canaries:
        """Fresh values, random and easy to spot: `CANARY-<name>-<hex>`."""
        return cls({n: f"CANARY-{n}-{secrets.token_hex(12)}" for n in CREDENTIAL_NAMES})

    def begin_test(self) -> None:
        """Forget the previous test's tokens, issued values and gateways."""
        self.tokens.clear()
        self.issued.clear()
        self.built.clear()
        self.checking = True

    def mint(self) -> str:
        """A new agent token, watched by every leak check of this test."""
        token = new_token()
        self.tokens.append(token)
        return token

    def watch(self, values: Sequence[str]) -> None:
        """Also check for the values `values` holds when the check runs (it may still grow)."""
        self.issued.append(values)

    def write(self, directory: Path) -> Path:
        """`directory` laid out as systemd's $CREDENTIALS_DIRECTORY, holding the credentials."""
        directory.mkdir(exist_ok=True)
        for name, value in self.credentials.items():
            (directory / name).write_text(value + "\n")
        return directory

    def values(self) -> list[str]:
        """Every secret watched now."""
        return [*self.credentials.values(), *self.tokens, *(v for vs in self.issued for v in vs)]

    def forms(self) -> set[bytes]:
        """Every form `turret.echo.encodings()` knows of every watched secret."""
        forms: set[bytes] = set()
        for value in self.values():
            forms |= encodings(value.encode())
        return forms

    def assert_absent(self, places: Iterable[tuple[str, bytes | str]]) -> None:
        """No watched secret, in any known form, in any of the named `places`."""
        forms = self.forms()
        for where, data in places:
            raw = data.encode("utf-8", "surrogateescape") if isinstance(data, str) else data
            for form in forms:
                assert form not in raw, f"secret leaked into {where}: {raw[:300]!r}"

    async def close_and_check(self, log_text: str) -> None:
        """Close every gateway built in this test, then check each for leaks."""
        self.checking = False
        for built in self.built:
            await built.client.close()
        for built in self.built:
            built.assert_no_leaks(log_text)


@dataclass
class Built:
    """A gateway on loopback: its client, audit file, recorded responses and the canaries."""

    client: TestClient[web.Request, web.Application]
    audit_path: Path
    responses: list[bytes]
    creds: Canaries

    @property
    def canaries(self) -> dict[str, str]:
        """Credential name -> canary value."""
        return self.creds.credentials

    def url(self, raw_target: str) -> URL:
        """An absolute URL whose path is sent exactly as written (no normalisation)."""
        return URL(str(self.client.make_url("")).rstrip("/") + raw_target, encoded=True)

    def audit(self) -> list[dict[str, str]]:
        """The audit records written so far."""
        text = self.audit_path.read_text() if self.audit_path.is_file() else ""
        return [json.loads(line) for line in text.splitlines()]

    def assert_no_leaks(self, log_text: str, *extra: str | bytes) -> None:
        """No canary or agent token, in any encoding, in responses, audit records, `log_text`
        or `extra` texts (CLI output, MCP messages)."""
        audit = self.audit_path.read_bytes() if self.audit_path.is_file() else b""
        self.creds.assert_absent(
            [
                ("audit", audit),
                ("log", log_text),
                *(("response", r) for r in self.responses),
                *(("extra text", t) for t in extra),
            ]
        )


def fields_of(built: Built) -> dict[str, Any]:
    """`built`'s fields, to construct a richer gateway value from it."""
    return {f.name: getattr(built, f.name) for f in dataclasses.fields(Built)}


def record_responses(app: web.Application) -> list[bytes]:
    """Record the head and body of every response `app` sends, for the leak check."""
    recorded: list[bytes] = []

    async def record(request: web.Request, response: web.StreamResponse) -> None:
        head = "".join(f"{k}: {v}\n" for k, v in response.headers.items()).encode()
        body = response.body if isinstance(response, web.Response) else b""
        body = body if isinstance(body, bytes) else b""
        if request.path == "/v1/tokens" and request.method == "POST" and response.status == 201:
            # The one answer that shows a token, by design: checked for every other secret.
            shown = json.loads(body)
            shown.pop("token")
            body = json.dumps(shown).encode()
        recorded.append(head + body)

    app.on_response_prepare.append(record)
    return recorded


class TurretTestServer(TestServer):
    """A test server without an access log, as in production (turret.server): aiohttp's would
    record raw targets, which Turret never logs. With `max_connections`, it runs behind Turret's
    own runner, so the connection cap is in force."""

    def __init__(self, app: web.Application, *, max_connections: int | None = None) -> None:
        super().__init__(app, host="127.0.0.1")
        self._max_connections = max_connections

    async def _make_runner(self, **kwargs: Any) -> AppRunner:
        kwargs["access_log"] = None
        if self._max_connections is None:
            return AppRunner(self.app, **kwargs)
        return TurretRunner(self.app, max_connections=self._max_connections, **kwargs)


async def build_gateway(
    config_text: str,
    *,
    creds: Canaries,
    audit_path: Path,
    credentials_dir: Path,
    resolver: Callable[[], AbstractResolver] | None = None,
    max_connections: int | None = None,
    auditor: Auditor | None = None,
    clock: Callable[[], float] | None = None,
    state: StateStore | None = None,
    wall: Callable[[], float] | None = None,
    hooks: Hooks | None = None,
) -> Built:
    """Turret serving `config_text` on loopback, registered for the end-of-test leak check.
    `hooks` are the minting providers' clocks, sleep and randomness."""
    assert creds.checking, "build gateways inside the `leak_check` fixture"
    runtime = build_runtime(load_config(config_text), str(credentials_dir), hooks=hooks)
    options: dict[str, Any] = {}
    if resolver is not None:
        options["resolver"] = resolver
    if clock is not None:
        options["clock"] = clock
    if state is not None:
        options["state"] = state
    if wall is not None:
        options["wall"] = wall
    app = create_app(
        RuntimeHolder(runtime), auditor or Auditor(LineSink.open(str(audit_path))), **options
    )
    recorded = record_responses(app)
    client = TestClient(TurretTestServer(app, max_connections=max_connections))
    await client.start_server()
    built = Built(client, audit_path, recorded, creds)
    creds.built.append(built)
    return built
