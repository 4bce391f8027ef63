"""The admin socket's audit routes: `GET /v1/admin/audit/head`, the head of the audit chain
(seq and chain value) for the operator to publish off the host (`turret audit head`)."""

from __future__ import annotations

from aiohttp import web

from turret.errors import NotFound
from turret.web import admin  # the app's VIEW; admin imports this module too


def add_routes(app: web.Application) -> None:
    """Add the audit routes to the admin app."""
    app.router.add_get("/v1/admin/audit/head", _head)


async def _head(request: web.Request) -> web.Response:
    chain = request.app[admin.VIEW].auditor.chain
    head = chain.head if chain is not None else None
    if head is None:
        raise NotFound("no audit chain: audit.chain_key is not configured")
    return web.json_response({"seq": head.seq, "chain": head.chain, "head": str(head)})
