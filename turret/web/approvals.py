"""`GET /v1/approvals/{id}`: a thin adapter of `turret.pipeline.approval_outcome`."""

from __future__ import annotations

from aiohttp import web

from turret.pipeline import approval_outcome
from turret.web.keys import CONTEXT
from turret.web.request import AiohttpExchange, incoming, respond


async def handle_read(request: web.Request) -> web.Response:
    """`GET /v1/approvals/{id}[?wait=SECONDS]`."""
    # The raw target names the approval, as it names a capability: no %-escapes decoded.
    raw_id = request.raw_path.partition("?")[0].removeprefix(approval_outcome.PREFIX)
    reply = await approval_outcome.read(
        request.app[CONTEXT],
        incoming(request),
        AiohttpExchange(request),
        raw_id=raw_id,
        raw_wait=request.query.get("wait"),
    )
    return respond(reply)


def add_approval_routes(app: web.Application) -> None:
    """The agent's side of human approval."""
    app.router.add_get(approval_outcome.PREFIX + "{id:[^/]+}", handle_read)
