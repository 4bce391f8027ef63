"""Admin routes for operations: `GET /metrics` (Prometheus text) and `POST /v1/admin/checkin`
(the operator's side of the dead-man switch). Served by the admin app only, so only on the
admin socket, behind its peer check."""

from __future__ import annotations

import asyncio
import json
import time
from typing import TYPE_CHECKING

from aiohttp import web

from turret import admin
from turret.deadman import record_checkin
from turret.errors import BadRequest
from turret.httpserver import peer_credentials
from turret.records import NOTICE, Event
from turret.state import by_uid

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from turret.web.admin import AdminView


def add_routes(app: web.Application, view: AdminView) -> None:
    """Add the operations routes to the admin app over `view`, with a metrics registry of its
    own, made at the first scrape: prometheus-client is imported only by a Turret that is
    scraped, so a plain one starts (and idles) without it."""
    registries: list[CollectorRegistry] = []

    async def metrics(request: web.Request) -> web.Response:
        from turret import metrics as exposition  # noqa: PLC0415 - lazily, see above

        if not registries:
            registries.append(exposition.registry_for(view))
        body = exposition.render(registries[0])
        return web.Response(body=body, headers={"Content-Type": exposition.CONTENT_TYPE})

    async def checkin(request: web.Request) -> web.Response:
        return await _checkin(request, view)

    app.router.add_get("/metrics", metrics)
    app.router.add_post("/v1/admin/checkin", checkin)


async def _checkin(request: web.Request, view: AdminView) -> web.Response:
    """Record a check-in with the operator's uid; the dead-man switch reads it from the store."""
    state = admin.store_of(view.state)
    creds = peer_credentials(request.transport)
    if creds is None:  # the connection check let it in, so this is a closed connection
        raise BadRequest("no peer credentials")
    at = time.time()
    await asyncio.to_thread(record_checkin, state, by_uid(creds.uid), at)
    checkin = view.holder.current.config.checkin
    doc: dict[str, object] = {
        "checkin": {"at": at, "by": by_uid(creds.uid)},
        "max_interval": checkin.max_interval if checkin is not None else None,
        "due_by": at + checkin.max_interval if checkin is not None else None,
    }
    view.auditor.record(
        Event.ADMIN_ACTION,
        f"admin: checkin by uid {creds.uid}",
        {
            "TURRET_OPERATOR_UID": creds.uid,
            "TURRET_ACTION": "checkin",
            "TURRET_DETAIL": json.dumps(doc),
        },
        priority=NOTICE,
    )
    return web.json_response(doc)
