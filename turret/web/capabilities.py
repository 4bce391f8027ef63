"""The capability API over HTTP: thin adapters of `turret.pipeline.calls`."""

from __future__ import annotations

from aiohttp import web

from turret.pipeline import calls
from turret.web.keys import CONTEXT
from turret.web.request import AiohttpExchange, incoming, respond


async def handle_list(request: web.Request) -> web.Response:
    """`GET /v1/capabilities`."""
    return respond(await calls.listing(request.app[CONTEXT], incoming(request)))


async def handle_call(request: web.Request) -> web.Response:
    """`POST /v1/capabilities/{name}`."""
    ctx = request.app[CONTEXT]
    return respond(await calls.call(ctx, incoming(request), AiohttpExchange(request)))


async def handle_explain(request: web.Request) -> web.Response:
    """`POST /v1/explain`."""
    ctx = request.app[CONTEXT]
    return respond(await calls.explain(ctx, incoming(request), AiohttpExchange(request)))


def add_capability_routes(app: web.Application) -> None:
    """The capability API: list, call, explain."""
    app.router.add_get("/v1/capabilities", handle_list)
    app.router.add_post(calls.CALL_PREFIX + r"{name:[^/]+}", handle_call)
    app.router.add_post("/v1/explain", handle_explain)
