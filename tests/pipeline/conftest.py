"""The sans-I/O pipeline driven directly: no aiohttp server, no HTTP.

A `Pipe` holds a real `Context` (a `Runtime` from a small config and canary credentials, a real
`AgentLimiter` and `FloodGate` on an injected clock, a real `TokenGuard`) whose `Recorder` keeps
every record in a list. Its `Exchange` is a plain object standing in for the I/O only: `body()`
returns the bytes (or raises the error) a test gives, `forward()` keeps the `Outbound` it got,
snapshots the records written so far, and returns a canned `UpstreamResponse`. When a test ends,
no canary credential and no agent token, in any encoding the echo guard knows, may appear in a
record or an answer.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from turret.auth import new_token, token_sha256
from turret.config import load_config
from turret.echo import encodings
from turret.errors import AuditUnavailable, RequestError
from turret.exfil import TokenGuard
from turret.model import Outbound, Service, UpstreamResponse
from turret.pipeline.request import Context, Incoming, Reply
from turret.providers.build import build_runtime
from turret.ratelimit import AgentLimiter, FloodGate
from turret.records import INFO, Event, Fields
from turret.runtime import Runtime, RuntimeHolder

AGENTS = ("opencode", "rollout", "other", "tight")
NOWHERE = "http://127.0.0.1:9"  # never contacted: forward() is the test's


def pipe_config(tokens: dict[str, str]) -> str:
    """Two services, three capabilities, and one agent for each behaviour under test."""
    d = {agent: token_sha256(token) for agent, token in tokens.items()}
    return f"""
limits:
  unauthenticated: {{requests_per_second: 1, burst: 2}}
services:
  gitea:
    url: {NOWHERE}
    auth: {{bearer: gitea-token}}
    max_request_bytes: 1024
  apikey:
    url: {NOWHERE}
    auth: {{header: {{name: X-Api-Key, value: api-key}}}}
capabilities:
  gitea.close_issue:
    service: gitea
    description: Close an issue
    params:
      repo: {{type: string, pattern: "[a-z0-9-]+"}}
      index: {{type: integer, minimum: 1}}
    request: {{method: PATCH, path: "/api/v1/repos/me/{{repo}}/issues/{{index}}",
               json: {{state: closed}}}}
    result: [number, state]
    log_params: [repo, index]
  gitea.note:
    service: gitea
    description: Post a note (free text)
    params:
      text: {{type: string, max_length: 200}}
    request: {{method: POST, path: "/notes", json: {{text: "{{text}}"}}}}
  gitea.delete_repo:
    service: gitea
    description: Delete a repository
    params:
      repo: {{type: string, pattern: "[a-z0-9-]+"}}
    request: {{method: DELETE, path: "/api/v1/repos/me/{{repo}}"}}
agents:
  opencode:
    token_sha256: {d["opencode"]}
    proxy:
      - {{service: gitea, methods: [GET, POST], paths: ["/api/v1/repos/me/*", "/api/v1/user"]}}
      - {{service: apikey, methods: [GET], paths: ["/echo/**"]}}
    capabilities:
      - name: gitea.close_issue
        params: {{repo: {{one_of: [turret, web]}}}}
      - gitea.note
    deny:
      - name: gitea.delete_repo
      - {{service: gitea, methods: [GET], paths: ["/api/v1/repos/me/private"]}}
  rollout:
    token_sha256: {d["rollout"]}
    report: true
    proxy:
      - {{service: gitea, methods: [GET], paths: ["/api/v1/user"]}}
    deny:
      - {{service: gitea, methods: [GET], paths: ["/api/v1/admin/**"]}}
  other:
    token_sha256: {d["other"]}
    proxy:
      - {{service: gitea, methods: [GET], paths: ["/api/v1/user"]}}
  tight:
    token_sha256: {d["tight"]}
    limits: {{requests_per_second: 1, burst: 2, max_concurrent: 1}}
    capabilities: [gitea.note]
    proxy:
      - {{service: gitea, methods: [GET], paths: ["/api/v1/user", "/slow"]}}
"""


@dataclass
class Clock:
    """The limiter's and flood gate's clock, moved by the test."""

    now: float = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Recording:
    """A `Recorder` that keeps each record; `lose` makes records of that event raise."""

    records: list[tuple[Event, str, Fields]] = field(default_factory=list)
    lose: Event | None = None

    def record(self, event: Event, message: str, fields: Fields, priority: int = INFO) -> None:
        if event is self.lose:
            raise AuditUnavailable("the test lost this record")
        self.records.append((event, message, dict(fields)))

    def events(self) -> list[Event]:
        return [event for event, _, _ in self.records]

    def last(self, event: Event) -> Fields:
        return [f for e, _, f in self.records if e is event][-1]


def ok_response(body: bytes = b'{"ok": 1}', status: int = 200) -> UpstreamResponse:
    return UpstreamResponse(status, CIMultiDict({"Content-Type": "application/json"}), body, 0)


@dataclass
class FakeExchange:
    """The I/O of one request, as plain Python: a body to hand out and a canned upstream."""

    recorder: Recording
    data: bytes = b""
    error: RequestError | None = None
    response: UpstreamResponse = field(default_factory=ok_response)
    forward_error: RequestError | None = None
    hold: Callable[[], Awaitable[None]] | None = None  # awaited inside forward()
    on_body: Callable[[], None] | None = None  # runs inside body(), as a reload might
    body_calls: int = 0
    forwarded: list[Outbound] = field(default_factory=list)
    runtimes: list[Runtime] = field(default_factory=list)  # the runtime each forward was on
    records_at_forward: list[list[Event]] = field(default_factory=list)

    async def body(self, limit: int, within: float) -> bytes:
        self.body_calls += 1
        if self.on_body is not None:
            self.on_body()
        if self.error is not None:
            raise self.error
        return self.data

    async def forward(
        self, runtime: Runtime, service: Service, out: Outbound, **_: object
    ) -> UpstreamResponse:
        self.forwarded.append(out)
        self.runtimes.append(runtime)
        self.records_at_forward.append(self.recorder.events())
        if self.hold is not None:
            await self.hold()
        if self.forward_error is not None:
            raise self.forward_error
        return self.response


@dataclass
class Pipe:
    """A real pipeline context, its recorder and clock, and the tokens of its agents."""

    ctx: Context
    recorder: Recording
    clock: Clock
    tokens: dict[str, str]
    canaries: dict[str, str]
    answers: list[str] = field(default_factory=list)  # replies and error messages, for the check

    @property
    def runtime(self) -> Runtime:
        return self.ctx.holder.current

    def incoming(
        self,
        method: str,
        target: str,
        *,
        agent: str | None = "opencode",
        headers: dict[str, str] | list[tuple[str, str]] | None = None,
        content_type: str = "",
    ) -> Incoming:
        items = list(headers.items()) if isinstance(headers, dict) else list(headers or [])
        if agent is not None:
            items.insert(0, ("Authorization", f"Bearer {self.tokens[agent]}"))
        return Incoming(
            method, target, CIMultiDictProxy(CIMultiDict(items)), content_type, None, "req-1"
        )

    def exchange(self, data: bytes = b"", **kwargs: object) -> FakeExchange:
        return FakeExchange(self.recorder, data, **kwargs)  # type: ignore[arg-type]

    def keep(self, reply: Reply) -> Reply:
        self.answers.append(json.dumps(reply.json) + repr(reply.body))
        return reply

    def refused(self, exc: RequestError) -> RequestError:
        self.answers.append(exc.message)
        return exc

    def assert_no_leaks(self) -> None:
        forms: set[bytes] = set()
        for value in [*self.canaries.values(), *self.tokens.values()]:
            forms |= encodings(value.encode())
        places = [json.dumps([m, f], default=str) for _, m, f in self.recorder.records]
        for text in [*places, *self.answers]:
            for form in forms:
                assert form.decode("latin-1") not in text, f"secret leaked: {text[:300]}"


def make_pipe(creds_dir: Path, canaries: dict[str, str]) -> Pipe:
    tokens = {agent: new_token() for agent in AGENTS}
    runtime = build_runtime(load_config(pipe_config(tokens)), str(creds_dir))
    clock, recorder = Clock(), Recording()
    ctx = Context(
        RuntimeHolder(runtime), recorder, AgentLimiter(clock), FloodGate(clock), TokenGuard()
    )
    return Pipe(ctx, recorder, clock, tokens, canaries)


@pytest.fixture
def pipe(creds_dir: Path, canaries: dict[str, str]) -> Iterator[Pipe]:
    """A pipeline context checked for leaks when the test ends."""
    p = make_pipe(creds_dir, canaries)
    yield p
    p.assert_no_leaks()
