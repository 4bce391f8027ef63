"""Fake upstreams for the catalog, each a real aiohttp app on loopback following the real API.

Each checks the credential the way its real counterpart does and answers with the documented
shape (plus fields an agent should not get, some of which reflect the credential, to show the
projection and the echo guard at work). Every request is recorded.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.parser import BytesParser
from email.policy import HTTP

from aiohttp import web
from aiohttp.test_utils import TestServer

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Seen:
    """One request a fake received."""

    service: str
    method: str
    raw_path: str
    headers: dict[str, str]
    body: bytes


def room_state(room: str) -> list[dict[str, object]]:
    """The state events a new room starts with, newest first, as /messages returns them: no
    msgtype and no body, which a reader of messages must not mistake for messages."""
    base = {"room_id": room, "sender": "@turret:example.org", "origin_server_ts": 1700000000000}
    return [
        {
            **base,
            "type": "m.room.member",
            "event_id": "$member",
            "state_key": "@turret:example.org",
            "content": {"membership": "join"},
        },
        {
            **base,
            "type": "m.room.create",
            "event_id": "$create",
            "state_key": "",
            "content": {"room_version": "12"},
        },
    ]


@dataclass
class FakeState:
    """What the fakes know: expected credentials, issued session cookies, stored objects."""

    tokens: dict[str, str]  # service kind -> expected credential
    seen: list[Seen] = field(default_factory=list)
    sids: set[str] = field(default_factory=set)  # valid qBittorrent sessions
    issued: list[str] = field(default_factory=list)  # every session cookie value ever issued
    logins: int = 0
    failed_logins: int = 0  # in a row, as qBittorrent counts them (per address: all loopback)
    max_failed_logins: int = 5  # qBittorrent's WebUI\MaxAuthenticationFailCount default
    login_status: int = 200  # anything else: the WebUI answers login with that error status
    sid_cookie: str = "SID"
    torrents: list[dict[str, object]] = field(default_factory=list)
    messages: dict[str, list[dict[str, object]]] = field(default_factory=dict)
    counter: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def requests(self, service: str) -> list[Seen]:
        return [s for s in self.seen if s.service == service]


def _recorded(service: str, state: FakeState, handler: Handler) -> Handler:
    async def wrapper(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        state.seen.append(
            Seen(service, request.method, request.raw_path, dict(request.headers), body)
        )
        return await handler(request)

    return wrapper


def _app(service: str, state: FakeState, routes: list[tuple[str, str, Handler]]) -> web.Application:
    app = web.Application()
    for method, path, handler in routes:
        app.router.add_route(method, path, _recorded(service, state, handler))
    return app


# --- Matrix client-server API ------------------------------------------------------------------


def matrix_app(state: FakeState) -> web.Application:
    def authorized(request: web.Request) -> bool:
        return request.headers.get("Authorization") == f"Bearer {state.tokens['matrix']}"

    def unknown_token() -> web.Response:
        body = {"errcode": "M_UNKNOWN_TOKEN", "error": "Invalid access token passed."}
        return web.json_response(body, status=401)

    async def send(request: web.Request) -> web.StreamResponse:
        if not authorized(request):
            return unknown_token()
        room = request.match_info["room"]
        if room not in state.messages:
            body = {"errcode": "M_FORBIDDEN", "error": "User not in room"}
            return web.json_response(body, status=403)
        content = await request.json()
        event_id = "$" + hashlib.sha256(request.match_info["txn"].encode()).hexdigest()[:20]
        state.messages[room].insert(
            0,
            {
                "type": request.match_info["type"],
                "event_id": event_id,
                "sender": "@turret:example.org",
                "origin_server_ts": 1700000000000 + next(state.counter),
                "room_id": room,
                "content": content,
                "unsigned": {"debug": request.headers["Authorization"]},
            },
        )
        return web.json_response({"event_id": event_id})

    async def messages(request: web.Request) -> web.StreamResponse:
        if not authorized(request):
            return unknown_token()
        room = request.match_info["room"]
        limit = int(request.query.get("limit", "10"))
        assert request.query["dir"] == "b"
        # The RoomEventFilter of the spec: only its "types" key is used by Turret.
        types = json.loads(request.query.get("filter", "{}")).get("types")
        events = state.messages.get(room, [])
        chunk = [e for e in events if types is None or e.get("type") in types][:limit]
        return web.json_response({"chunk": chunk, "start": "t1-start", "end": "t2-end"})

    base = "/_matrix/client/v3/rooms/{room}"
    return _app(
        "matrix",
        state,
        [
            ("PUT", base + "/send/{type}/{txn}", send),
            ("GET", base + "/messages", messages),
        ],
    )


# --- qBittorrent WebUI API v2 ------------------------------------------------------------------


def _multipart(content_type: str, body: bytes) -> dict[str, str]:
    """The fields of a multipart/form-data body, read by the standard library's MIME parser."""
    message = BytesParser(policy=HTTP).parsebytes(
        b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body
    )
    assert isinstance(message, EmailMessage)
    return {
        str(part.get_param("name", header="content-disposition")): str(part.get_content())
        for part in message.iter_parts()
    }


def qbittorrent_app(state: FakeState) -> web.Application:
    async def login(request: web.Request) -> web.StreamResponse:
        form = await request.post()
        state.logins += 1
        if state.failed_logins >= state.max_failed_logins:
            text = "Your IP address has been banned after too many failed authentication attempts."
            return web.Response(status=403, text=text)
        if state.login_status != 200:
            return web.Response(status=state.login_status, text="Service Unavailable")
        if form.get("username") != "admin" or form.get("password") != state.tokens["qbittorrent"]:
            state.failed_logins += 1
            return web.Response(text="Fails.")
        state.failed_logins = 0
        sid = secrets.token_urlsafe(24)
        state.sids.add(sid)
        state.issued.append(sid)
        resp = web.Response(text="Ok.")
        resp.set_cookie(state.sid_cookie, sid, path="/", httponly=True, samesite="Strict")
        return resp

    def logged_in(request: web.Request) -> bool:
        return request.cookies.get(state.sid_cookie) in state.sids

    async def add(request: web.Request) -> web.StreamResponse:
        if not logged_in(request):
            return web.Response(status=403, text="Forbidden")
        assert request.content_type == "multipart/form-data"
        form = _multipart(request.headers["Content-Type"], await request.read())
        for url in str(form["urls"]).split("\n"):
            state.torrents.append(
                {
                    "hash": hashlib.sha1(url.encode()).hexdigest(),  # noqa: S324 - a fake info hash
                    "name": f"torrent-{len(state.torrents)}",
                    "state": "downloading",
                    "progress": 0.25,
                    "size": 1 << 30,
                    "category": str(form.get("category", "")),
                    "save_path": "/srv/torrents",
                    "magnet_uri": url,
                    "added_on": 1700000000,
                }
            )
        return web.Response(text="Ok.")

    async def info(request: web.Request) -> web.StreamResponse:
        if not logged_in(request):
            return web.Response(status=403, text="Forbidden")
        category = request.query.get("category")
        found = [t for t in state.torrents if category is None or t["category"] == category]
        return web.json_response(found)

    async def cookie(request: web.Request) -> web.StreamResponse:
        """Not in qBittorrent: a debug page quoting the request's cookie, to test the guard."""
        if not logged_in(request):
            return web.Response(status=403, text="Forbidden")
        return web.Response(text=f"you sent: {request.headers['Cookie']}")

    return _app(
        "qbittorrent",
        state,
        [
            ("GET", "/api/v2/app/cookie", cookie),
            ("POST", "/api/v2/auth/login", login),
            ("POST", "/api/v2/torrents/add", add),
            ("GET", "/api/v2/torrents/info", info),
        ],
    )


# --- Proxmox VE API ----------------------------------------------------------------------------

GUESTS = {
    ("pve1", "lxc", "101"): "web",
    ("pve1", "qemu", "200"): "win",
    ("pve2", "lxc", "300"): "db",
}


def proxmox_app(state: FakeState) -> web.Application:
    async def status(request: web.Request) -> web.StreamResponse:
        if request.headers.get("Authorization") != f"PVEAPIToken={state.tokens['proxmox']}":
            return web.Response(status=401, text="authentication failure")
        info = request.match_info
        name = GUESTS.get((info["node"], info["type"], info["vmid"]))
        if name is None:
            return web.json_response({"data": None}, status=500)
        data = {
            "status": "running",
            "vmid": int(info["vmid"]),
            "name": name,
            "uptime": 86400,
            "cpu": 0.02,
            "mem": 1 << 28,
            "maxmem": 1 << 30,
            "ha": {"managed": 0},
        }
        return web.json_response({"data": data})

    path = "/api2/json/nodes/{node}/{type:lxc|qemu}/{vmid}/status/current"
    return _app("proxmox", state, [("GET", path, status)])


# --- Gitea API v1 ------------------------------------------------------------------------------


def gitea_app(state: FakeState) -> web.Application:
    def authorized(request: web.Request) -> bool:
        return request.headers.get("Authorization") in (
            f"token {state.tokens['gitea']}",
            f"Bearer {state.tokens['gitea']}",
        )

    def repo_of(request: web.Request) -> str | None:
        repo = f"{request.match_info['owner']}/{request.match_info['repo']}"
        return repo if repo in ("me/notes", "me/infra") else None

    async def create(request: web.Request) -> web.StreamResponse:
        if not authorized(request):
            return web.json_response({"message": "token is required"}, status=401)
        repo = repo_of(request)
        if repo is None:
            return web.json_response({"message": "The target couldn't be found."}, status=404)
        issue = await request.json()
        number = next(state.counter)
        return web.json_response(
            {
                "id": 1000 + number,
                "number": number,
                "title": issue["title"],
                "body": issue.get("body", ""),
                "state": "open",
                "html_url": f"https://git.example.org/{repo}/issues/{number}",
                "user": {"login": "turret", "email": "turret@example.org"},
            },
            status=201,
        )

    async def comment(request: web.Request) -> web.StreamResponse:
        if not authorized(request):
            return web.json_response({"message": "token is required"}, status=401)
        repo = repo_of(request)
        data = await request.json()
        number = next(state.counter)
        return web.json_response(
            {
                "id": 5000 + number,
                "html_url": f"https://git.example.org/{repo}/issues/{request.match_info['index']}"
                f"#issuecomment-{5000 + number}",
                "body": data["body"],
                "user": {"login": "turret"},
            },
            status=201,
        )

    async def edit(request: web.Request) -> web.StreamResponse:
        if not authorized(request):
            return web.json_response({"message": "token is required"}, status=401)
        data = await request.json()
        number = int(request.match_info["index"])
        return web.json_response({"number": number, "state": data["state"], "id": 77}, status=201)

    base = "/api/v1/repos/{owner}/{repo}/issues"
    return _app(
        "gitea",
        state,
        [
            ("POST", base, create),
            ("POST", base + "/{index}/comments", comment),
            ("PATCH", base + "/{index}", edit),
        ],
    )


# --- ntfy --------------------------------------------------------------------------------------


def ntfy_app(state: FakeState) -> web.Application:
    async def publish(request: web.Request) -> web.StreamResponse:
        if request.headers.get("Authorization") != f"Bearer {state.tokens['ntfy']}":
            body = {"code": 40101, "http": 401, "error": "unauthorized"}
            return web.json_response(body, status=401)
        message = await request.json()
        priority = message.get("priority", 3)
        if not isinstance(priority, int) or not 1 <= priority <= 5:
            body = {"code": 40007, "http": 400, "error": "invalid request: priority invalid"}
            return web.json_response(body, status=400)
        return web.json_response(
            {
                "id": f"msg{next(state.counter)}",
                "time": 1700000000,
                "expires": 1700043200,
                "event": "message",
                **message,
            }
        )

    return _app("ntfy", state, [("POST", "/", publish)])


# --- Home Assistant REST API -------------------------------------------------------------------


def homeassistant_app(state: FakeState) -> web.Application:
    async def call(request: web.Request) -> web.StreamResponse:
        if request.headers.get("Authorization") != f"Bearer {state.tokens['homeassistant']}":
            return web.Response(status=401, text="401: Unauthorized")
        data = await request.json()
        entity = data["entity_id"]
        on = request.match_info["service"] == "turn_on"
        return web.json_response(
            [
                {
                    "entity_id": entity,
                    "state": "on" if on else "off",
                    "attributes": {"friendly_name": entity},
                    "last_changed": "2024-01-01T00:00:00+00:00",
                    "context": {"id": "01HX", "user_id": "abc"},
                }
            ]
        )

    return _app("homeassistant", state, [("POST", "/api/services/{domain}/{service}", call)])


FAKES: dict[str, Callable[[FakeState], web.Application]] = {
    "matrix": matrix_app,
    "qbittorrent": qbittorrent_app,
    "proxmox": proxmox_app,
    "gitea": gitea_app,
    "ntfy": ntfy_app,
    "homeassistant": homeassistant_app,
}


async def start_fakes(state: FakeState) -> dict[str, TestServer]:
    """One server per kind, each on its own loopback port."""
    servers = {}
    for kind, make in FAKES.items():
        server = TestServer(make(state), host="127.0.0.1")
        await server.start_server()
        servers[kind] = server
    return servers
