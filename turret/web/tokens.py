"""Derived tokens over HTTP: thin adapters of `turret.pipeline.tokens`."""

from __future__ import annotations

from aiohttp import web

from turret.pipeline import tokens
from turret.web.keys import CONTEXT
from turret.web.request import AiohttpExchange, incoming, respond


async def handle_mint(request: web.Request) -> web.Response:
    """`POST /v1/tokens`."""
    ctx = request.app[CONTEXT]
    return respond(await tokens.mint(ctx, incoming(request), AiohttpExchange(request)))


async def handle_list(request: web.Request) -> web.Response:
    """`GET /v1/tokens`."""
    return respond(await tokens.listing(request.app[CONTEXT], incoming(request)))


async def handle_revoke(request: web.Request) -> web.Response:
    """`DELETE /v1/tokens/{id}`."""
    ctx = request.app[CONTEXT]
    return respond(await tokens.revoke(ctx, incoming(request), request.match_info["id"]))


def add_token_routes(app: web.Application) -> None:
    """`/v1/tokens` and `/v1/tokens/{id}`."""
    app.router.add_post(tokens.TOKENS_PATH, handle_mint)
    app.router.add_get(tokens.TOKENS_PATH, handle_list)
    app.router.add_delete(tokens.TOKENS_PATH + "/{id:tok_[0-9a-f]{16}}", handle_revoke)
