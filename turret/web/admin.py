"""The admin application, served only on the admin socket: status, agents, revoke, seal, and
the derived tokens (list, revoke).

Every connection is checked as it opens (`PEER_CHECK`): a peer that is not root, Turret's own
uid or allowed by `admin:` is closed unanswered and audited (`admin_refused`). Every action is
audited (`admin_action`) with the operator's uid. Errors have the agents' one JSON shape.
"""

from __future__ import annotations

import asyncio
import grp
import json
import logging
import os
import pwd
import time
from collections.abc import Callable
from typing import Protocol

from aiohttp import web

from turret import admin
from turret.audit import Auditor
from turret.counters import RequestCounters
from turret.errors import AuditUnavailable, BadRequest, RequestError, ServiceUnavailable
from turret.httpserver import PEER_CHECK, PeerCredentials, peer_credentials
from turret.model import AGENT_NAME
from turret.pipeline.tokens import revoke_tree
from turret.providers.minting import revoke_all
from turret.records import NOTICE, WARNING, Event
from turret.requestids import RequestIds
from turret.runtime import RuntimeHolder
from turret.state import StateStore, by_uid
from turret.web import admin_approvals, admin_audit, admin_credentials, admin_ops
from turret.web.middleware import Handler, error_response, no_version_banner

log = logging.getLogger("turret")
MAX_BODY = 4096


class AdminView(Protocol):
    """What the admin app reads of the running server (the `Gateway`)."""

    holder: RuntimeHolder
    auditor: Auditor
    state: StateStore | None

    def facts(self) -> admin.Facts:
        """Version, uptime, config digest, last reload, audit sink, requests in flight."""

    def counters(self) -> RequestCounters:
        """The agents' app's request counters."""


VIEW = web.AppKey("admin_view", AdminView)
IDS = web.AppKey("admin_ids", RequestIds)


def create_admin_app(view: AdminView, own_uid: int | None = None) -> web.Application:
    """The admin app over `view`; `own_uid` (default: this process's) may always connect."""
    app = web.Application(middlewares=[_errors], client_max_size=MAX_BODY)
    app[VIEW] = view
    app[IDS] = RequestIds()
    app[PEER_CHECK] = _peer_check(view, os.getuid() if own_uid is None else own_uid)
    app.on_response_prepare.append(no_version_banner)
    app.router.add_get("/v1/admin/status", _status)
    app.router.add_get("/v1/admin/agents", _agents)
    app.router.add_post("/v1/admin/agents/{agent}/revoke", _revoke)
    app.router.add_post("/v1/admin/agents/{agent}/unrevoke", _unrevoke)
    app.router.add_post("/v1/admin/seal", _seal)
    app.router.add_post("/v1/admin/unseal", _unseal)
    app.router.add_post("/v1/admin/killswitch", _killswitch)
    app.router.add_get("/v1/admin/tokens", _tokens)
    app.router.add_post("/v1/admin/tokens/{token}/revoke", _revoke_token)
    admin_credentials.add_routes(app, view)
    admin_ops.add_routes(app, view)
    admin_audit.add_routes(app)
    admin_approvals.add_routes(app, view)
    return app


def _peer_check(view: AdminView, own_uid: int) -> Callable[[PeerCredentials | None], bool]:
    def check(creds: PeerCredentials | None) -> bool:
        settings = view.holder.current.config.admin
        peer = _peer(creds, settings.allow_group)
        if admin.peer_allowed(peer, own_uid, settings):
            return True
        # Closing is the refusal; losing its record must not open the door, so it is logged.
        uid = "-" if creds is None else str(creds.uid)
        try:
            view.auditor.record(
                Event.ADMIN_REFUSED,
                f"admin connection refused: uid {uid}",
                {
                    "TURRET_OPERATOR_UID": uid,
                    "TURRET_PEER_PID": None if creds is None else creds.pid,
                },
                priority=WARNING,
            )
        except AuditUnavailable:
            log.exception("admin connection of uid %s refused; its audit record was lost", uid)
        return False

    return check


def _peer(creds: PeerCredentials | None, group: str | None) -> admin.Peer | None:
    """The peer with what `admin.allow_group` needs looked up (NSS, at connection time)."""
    if creds is None:
        return None
    members = user = None
    if group is not None:
        try:
            entry = grp.getgrnam(group)
            members = (entry.gr_gid, frozenset(entry.gr_mem))
        except KeyError:
            members = None
        try:
            user = pwd.getpwuid(creds.uid).pw_name
        except KeyError:
            user = None
    return admin.Peer(creds.uid, creds.gid, members, user)


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    request_id = request.app[IDS].next()
    try:
        response = await handler(request)
    except RequestError as exc:
        response = error_response(exc, request_id)
    except AuditUnavailable:
        log.exception("admin request %s: audit unavailable", request_id)
        unavailable = ServiceUnavailable("audit trail unavailable; see the log")
        response = error_response(unavailable, request_id)
    except web.HTTPException as exc:
        error = RequestError(exc.reason)
        error.status = exc.status
        error.code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status, "http_error")
        response = error_response(error, request_id)
    response.headers["X-Request-Id"] = request_id
    return response


def _operator(request: web.Request) -> int:
    creds = peer_credentials(request.transport)
    if creds is None:  # the connection check let it in, so this is a closed connection
        raise BadRequest("no peer credentials")
    return creds.uid


async def _reason(request: web.Request, default: str) -> str:
    return admin.reason_from_body(await request.read(), default)


def _agent(request: web.Request) -> str:
    agent = request.match_info["agent"]
    if not AGENT_NAME.fullmatch(agent):
        raise BadRequest(f"agent name must match {AGENT_NAME.pattern}")
    return agent


async def _status(request: web.Request) -> web.Response:
    view = request.app[VIEW]
    config = view.holder.current.config
    doc = admin.status_doc(view.facts(), config, view.state, view.counters(), time.time())
    return web.json_response(doc)


async def _agents(request: web.Request) -> web.Response:
    view = request.app[VIEW]
    doc = admin.agents_doc(view.holder.current.config, view.state, view.counters(), time.time())
    return web.json_response({"agents": doc})


async def _act(
    request: web.Request, what: str, command: Callable[[StateStore, int, float], dict[str, object]]
) -> web.Response:
    """Run a store command in a worker thread (its writes fsync), then audit it with the uid."""
    view = request.app[VIEW]
    state = admin.store_of(view.state)
    uid = _operator(request)
    doc = await asyncio.to_thread(command, state, uid, time.time())
    revoked = doc.get("revoked_token_ids")
    agent = doc.get("agent")
    for token_id in revoked if isinstance(revoked, list) else ():
        # Each derived token the action ended has its own record, saying why.
        view.auditor.record(
            Event.TOKEN_REVOKED,
            f"token {token_id} revoked: {what} by uid {uid}",
            {
                "TURRET_AGENT": agent if isinstance(agent, str) else None,
                "TURRET_TOKEN_ID": str(token_id),
                "TURRET_REVOKED_BY": f"{what} (uid:{uid})",
                "TURRET_OPERATOR_UID": uid,
            },
            priority=NOTICE,
        )
    view.auditor.record(
        Event.ADMIN_ACTION,
        f"admin: {what} by uid {uid}",
        {"TURRET_OPERATOR_UID": uid, "TURRET_ACTION": what, "TURRET_DETAIL": json.dumps(doc)},
        priority=NOTICE,
    )
    return web.json_response(doc)


async def _revoke(request: web.Request) -> web.Response:
    agent = _agent(request)
    reason = await _reason(request, "revoked by an operator")
    config = request.app[VIEW].holder.current.config
    return await _act(
        request,
        f"revoke {agent}",
        lambda state, uid, at: admin.revoke(state, config, agent, reason=reason, uid=uid, at=at),
    )


async def _unrevoke(request: web.Request) -> web.Response:
    agent = _agent(request)
    return await _act(
        request, f"unrevoke {agent}", lambda state, _, __: admin.unrevoke(state, agent)
    )


async def _seal(request: web.Request) -> web.Response:
    reason = await _reason(request, "sealed by an operator")
    return await _act(request, "seal", lambda state, uid, at: admin.seal(state, reason, uid, at))


async def _unseal(request: web.Request) -> web.Response:
    return await _act(request, "unseal", lambda state, _, __: admin.unseal(state))


async def _killswitch(request: web.Request) -> web.Response:
    reason = await _reason(request, "killswitch")
    response = await _act(
        request, "killswitch", lambda state, uid, at: admin.killswitch(state, reason, uid, at)
    )
    # Sealed first (no request is served from here on), then every minted lease revoked.
    view, runtime = request.app[VIEW], request.app[VIEW].holder.current
    await revoke_all(runtime.providers, view.auditor, runtime.retired)
    return response


async def _tokens(request: web.Request) -> web.Response:
    view = request.app[VIEW]
    agent = request.query.get("agent")
    if agent is not None and not AGENT_NAME.fullmatch(agent):
        raise BadRequest(f"agent name must match {AGENT_NAME.pattern}")
    state = admin.store_of(view.state)
    doc = admin.tokens_doc(state, view.holder.current.config, agent, time.time())
    return web.json_response({"tokens": doc})


async def _revoke_token(request: web.Request) -> web.Response:
    """Revoke a derived token and its descendants: `token_revoked` for each (by the operator's
    uid for the one asked for, "parent" for the others), then the `admin_action`."""
    view = request.app[VIEW]
    token_id = admin.token_id_of(request.match_info["token"])
    state = admin.store_of(view.state)
    uid = _operator(request)
    agent = admin.known_token(state, token_id)
    by = by_uid(uid)
    revoked = await revoke_tree(state, token_id, by, time.time())
    revoked.sort(key=lambda rid: rid != token_id)  # the one asked for first
    for rid in revoked:
        cause = "revoked" if rid == token_id else f"parent {token_id} revoked"
        view.auditor.record(
            Event.TOKEN_REVOKED,
            f"{agent}: token {rid} {cause} by {by}",
            {
                "TURRET_AGENT": agent,
                "TURRET_TOKEN_ID": rid,
                "TURRET_REVOKED_BY": by if rid == token_id else "parent",
                "TURRET_OPERATOR_UID": uid,
            },
            priority=NOTICE,
        )
    doc: dict[str, object] = {"token": token_id, "agent": agent, "revoked": revoked}
    view.auditor.record(
        Event.ADMIN_ACTION,
        f"admin: revoke token {token_id} by uid {uid}",
        {
            "TURRET_OPERATOR_UID": uid,
            "TURRET_ACTION": f"revoke token {token_id}",
            "TURRET_DETAIL": json.dumps(doc),
        },
        priority=NOTICE,
    )
    return web.json_response(doc)
