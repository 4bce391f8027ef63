"""The admin routes of key age: `GET /v1/admin/credentials` (`turret credentials`), `POST
/v1/admin/check` (`turret check`), `POST /v1/admin/credentials/NAME/rotating` (`turret
rotate --wait` announcing who rotates NAME) and `POST /v1/admin/providers/NAME/rotate` (`turret
rotate PROVIDER`: a minting provider rotated by Turret itself). Same peer check, error shape
and audit as every admin route: they are added to the admin app by `create_admin_app`.

Checks go out on a session pool of the admin app's own, through `upstream.send` with the
running runtime's providers: the same address policy and guards as an agent's request.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Protocol

from aiohttp import web
from aiohttp.resolver import DefaultResolver

from turret import admin, credwatch
from turret.audit import Auditor
from turret.connector import SessionPool
from turret.errors import BadRequest, NotFound
from turret.healthcheck import run_checks
from turret.httpserver import peer_credentials
from turret.model import CREDENTIAL_NAME, NAME
from turret.providers.minting import rotate
from turret.records import NOTICE, Event
from turret.runtime import RuntimeHolder
from turret.state import StateStore


class CredentialsView(Protocol):
    """What these routes read of the running server (the `Gateway`)."""

    holder: RuntimeHolder
    auditor: Auditor
    state: StateStore | None


VIEW = web.AppKey("admin_credentials_view", CredentialsView)
CHECKS = web.AppKey("admin_check_sessions", SessionPool)


def add_routes(app: web.Application, view: CredentialsView) -> None:
    """Add the key-age routes over `view` and the health checks' session pool to the admin app."""
    app[VIEW] = view
    app.cleanup_ctx.append(_sessions)
    app.router.add_get("/v1/admin/credentials", _credentials)
    app.router.add_post("/v1/admin/credentials/{name}/rotating", _rotating)
    app.router.add_post("/v1/admin/check", _check)
    app.router.add_post("/v1/admin/providers/{name}/rotate", _rotate_provider)


async def _sessions(app: web.Application) -> AsyncIterator[None]:
    pool = app[CHECKS] = SessionPool(DefaultResolver())
    try:
        yield
    finally:
        await pool.close()


async def _credentials(request: web.Request) -> web.Response:
    view = request.app[VIEW]
    if view.state is not None:
        await asyncio.to_thread(view.state.flush)  # the last-used times batched in memory
    doc = credwatch.credentials_doc(view.holder.current, view.state, time.time())
    return web.json_response({"state_store": view.state is not None, "credentials": doc})


async def _rotating(request: web.Request) -> web.Response:
    view = request.app[VIEW]
    name = request.match_info["name"]
    if not CREDENTIAL_NAME.fullmatch(name):
        raise BadRequest(f"credential name must match {CREDENTIAL_NAME.pattern}")
    state = admin.store_of(view.state)
    uid = operator(request)
    config = view.holder.current.config
    await asyncio.to_thread(credwatch.announce, state, config, name, uid, time.time())
    doc = {"credential": name, "announced_by_uid": uid}
    _audit(request, f"rotating {name}", uid, doc)
    return web.json_response(doc)


async def _rotate_provider(request: web.Request) -> web.Response:
    """A provider that mints its credentials rotates by itself: every credential it handed out
    that may still be valid is revoked at its source and the next use mints a new one; then the
    health check of every service using it runs (with a freshly minted credential)."""
    view = request.app[VIEW]
    name = request.match_info["name"]
    if not NAME.fullmatch(name):
        raise BadRequest(f"provider name must match {NAME.pattern}")
    uid = operator(request)
    runtime = view.holder.current
    reports = await rotate(runtime.providers, name, view.auditor, uid)
    if not reports:
        raise NotFound(f"no service uses a provider {name!r} that mints its credentials")
    services = [
        {
            "service": service,
            "revoked": r.revoked,
            "forgotten": r.forgotten,
            "revoke_failures": list(r.failures),
        }
        for service, r in sorted(reports.items())
    ]
    checks = await run_checks(runtime, request.app[CHECKS], sorted(reports))
    ok = all(not s["revoke_failures"] for s in services) and all(
        c["ok"] is not False for c in checks
    )
    doc = {"provider": name, "services": services, "checks": checks, "ok": ok}
    _audit(request, f"rotate provider {name}", uid, doc)
    return web.json_response(doc)


async def _check(request: web.Request) -> web.Response:
    view = request.app[VIEW]
    uid = operator(request)
    names = await _services(request)
    results = await run_checks(view.holder.current, request.app[CHECKS], names)
    doc = {"checks": results, "ok": all(r["ok"] is not False for r in results)}
    _audit(request, "check", uid, doc)
    return web.json_response(doc)


async def _services(request: web.Request) -> list[str] | None:
    """The `services` the body names, or None (every service) without a body."""
    body = admin.body_object(await request.read())
    if body is None:
        return None
    names = body.get("services")
    if not isinstance(names, list) or not all(isinstance(n, str) and NAME.fullmatch(n)
                                              for n in names):  # fmt: skip
        raise BadRequest('the body must be {"services": [NAME, ...]}')
    return names


def operator(request: web.Request) -> int:
    """The operator's uid, from the kernel (the connection's peer check let it in)."""
    creds = peer_credentials(request.transport)
    if creds is None:
        raise BadRequest("no peer credentials")
    return creds.uid


def _audit(request: web.Request, what: str, uid: int, doc: object) -> None:
    request.app[VIEW].auditor.record(
        Event.ADMIN_ACTION,
        f"admin: {what} by uid {uid}",
        {"TURRET_OPERATOR_UID": uid, "TURRET_ACTION": what, "TURRET_DETAIL": json.dumps(doc)},
        priority=NOTICE,
    )
