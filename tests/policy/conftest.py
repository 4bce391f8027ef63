"""A fake OPA (a real aiohttp server implementing the Data API's `POST /v1/data/{path}`, on
loopback TCP or a unix socket) and a lease gateway that asks it."""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from tests.conftest import Upstream
from tests.gateway import Canaries
from tests.tokens.conftest import LeaseGateway, make_lease_gateway, state
from turret.state import StateStore

__all__ = ["FakeOpa", "opa_gateway", "state"]

Answer = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def allow(_: web.Request) -> web.StreamResponse:
    return web.json_response({"result": True})


@dataclass
class FakeOpa:
    """OPA's Data API: records each query's path and body, answers with `answer`."""

    answer: Answer = allow
    queries: list[tuple[str, bytes]] = field(default_factory=list)
    url: str = ""

    def app(self) -> web.Application:
        async def data(request: web.Request) -> web.StreamResponse:
            assert request.content_type == "application/json"
            self.queries.append((request.path, await request.read()))
            return await self.answer(request)

        app = web.Application()
        app.router.add_post("/v1/data/{path:.*}", data)
        return app

    @property
    def inputs(self) -> list[dict[str, Any]]:
        """The `input` of every query, in order."""
        return [json.loads(body)["input"] for _, body in self.queries]


@pytest.fixture
async def fake_opa() -> AsyncIterator[FakeOpa]:
    """The fake OPA on loopback TCP."""
    opa = FakeOpa()
    server = TestServer(opa.app(), host="127.0.0.1")
    await server.start_server()
    opa.url = str(server.make_url("")).rstrip("/")
    yield opa
    await server.close()


@pytest.fixture
async def unix_opa() -> AsyncIterator[FakeOpa]:
    """The fake OPA on a unix socket (`url` is `unix:PATH`)."""
    opa = FakeOpa()
    directory = Path(tempfile.mkdtemp(prefix="turret-opa-"))
    runner = web.AppRunner(opa.app())
    await runner.setup()
    site = web.UnixSite(runner, str(directory / "opa.sock"))
    await site.start()
    opa.url = f"unix:{directory / 'opa.sock'}"
    yield opa
    await runner.cleanup()
    shutil.rmtree(directory, ignore_errors=True)


def policy(url: str, timeout: float = 0.5, path: str = "turret/allow") -> str:
    return f"policy:\n  opa: {{url: '{url}', path: {path}, timeout: {timeout}}}\n"


async def opa_gateway(
    upstream: Upstream, creds: Canaries, tmp_path: Path, store: StateStore, url: str, **kw: Any
) -> LeaseGateway:
    """The lease gateway (alice, nod, brief) asking the OPA at `url`."""
    return await make_lease_gateway(upstream, creds, tmp_path, state=store, extra=policy(url, **kw))
