"""The guarded proxy and `whoami` over HTTP: thin adapters of `turret.pipeline.proxy`."""

from __future__ import annotations

from aiohttp import web

from turret.pipeline import proxy
from turret.web.keys import CONTEXT
from turret.web.request import AiohttpExchange, incoming, respond


async def handle_whoami(request: web.Request) -> web.Response:
    """`GET /v1/whoami`."""
    return respond(await proxy.whoami(request.app[CONTEXT], incoming(request)))


async def handle_proxy(request: web.Request) -> web.Response:
    """`ANY /v1/proxy/{service}/{path}`."""
    ctx = request.app[CONTEXT]
    return respond(await proxy.proxy(ctx, incoming(request), AiohttpExchange(request)))


def add_proxy_routes(app: web.Application) -> None:
    """`/v1/whoami` and the proxy. Everything under the prefix reaches the handler, which reads
    the raw target itself: the router sees a decoded path, and what it decoded must not decide
    anything."""
    app.router.add_get("/v1/whoami", handle_whoami)
    app.router.add_route("*", proxy.PROXY_PREFIX + r"{tail:[\s\S]*}", handle_proxy)
