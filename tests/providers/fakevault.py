"""A fake HashiCorp Vault / OpenBao, written from Vault's HTTP API documentation, as a real
aiohttp server on loopback. It checks what the real one requires, and answers in its shapes:

- `POST /v1/auth/approle/login` with exactly `{role_id, secret_id}` → `auth.client_token`,
  `auth.lease_duration`, `auth.renewable`;
- every other call carries `X-Vault-Token` (a live token this server issued), and
  `X-Vault-Namespace` when the server is namespaced (Enterprise and OpenBao namespaces);
- KV v2 `GET /v1/{mount}/data/{path}[?version=N]` → `data.data`, `data.metadata.created_time`
  (RFC 3339 with nanoseconds, as Vault writes it) and `.version`;
- dynamic `GET /v1/{mount}/creds/{role}` → `lease_id`, `lease_duration`, `renewable`, `data`;
- `PUT /v1/sys/leases/renew` `{lease_id, increment}` (capped at the role's max TTL) and
  `PUT /v1/sys/leases/revoke` `{lease_id}` → 204; `POST /v1/auth/token/revoke-self` → 204;
- errors as `{"errors": [...]}`: 400 bad request, 403 permission denied, 404 unknown path.

Knobs for the tests: `fail_next` (that many 503s), `malformed` (a path prefix answered with a
broken body of the named kind), and a `clock` shared with Turret's.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import web


@dataclass
class Lease:
    lease_id: str
    data: dict[str, str]
    expires: float
    max_expires: float
    revoked: bool = False


@dataclass
class Call:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes


@dataclass
class FakeVault:
    """The server's state; `app()` serves it."""

    clock: Callable[[], float]
    role_id: str = field(default_factory=lambda: "role-" + secrets.token_hex(8))
    secret_id: str = field(default_factory=lambda: "CANARY-secret-id-" + secrets.token_hex(12))
    namespace: str | None = None
    token_ttl: int = 1200
    lease_ttl: int = 600
    lease_max_ttl: int = 3600
    kv: dict[str, list[tuple[dict[str, str], float]]] = field(default_factory=dict)
    tokens: dict[str, float] = field(default_factory=dict)  # token -> expiry
    leases: dict[str, Lease] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)
    revoked_tokens: list[str] = field(default_factory=list)
    fail_next: int = 0
    malformed: tuple[str, str] | None = None  # (path prefix, kind)
    issued: list[str] = field(default_factory=list)  # every secret value handed out

    def put_kv(self, mount: str, path: str, data: dict[str, str]) -> int:
        """A new version of a KV v2 secret, created now; its version number."""
        versions = self.kv.setdefault(f"{mount}/{path}", [])
        versions.append((dict(data), self.clock()))
        self.issued.extend(data.values())
        return len(versions)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        return app

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.calls.append(
            Call(request.method, request.path, dict(request.query), dict(request.headers), body)
        )
        if self.fail_next > 0:
            self.fail_next -= 1
            return _errors(503, "Vault is sealed")
        if self.malformed and request.path.startswith(self.malformed[0]):
            return _malformed(self.malformed[1])
        if (
            self.namespace is not None
            and request.headers.get("X-Vault-Namespace") != self.namespace
        ):
            return _errors(403, "permission denied")  # the mount is not in the root namespace
        path = request.path.removeprefix("/v1/")
        if path == "auth/approle/login":
            return self._login(request, body)
        token = request.headers.get("X-Vault-Token", "")
        if self.tokens.get(token, 0) <= self.clock():
            return _errors(403, "permission denied")
        return self._route(request.method, path, dict(request.query), body, token)

    def _route(
        self, method: str, path: str, query: dict[str, str], body: bytes, token: str
    ) -> web.Response:
        if path == "auth/token/revoke-self" and method == "POST":
            del self.tokens[token]
            self.revoked_tokens.append(token)
            return web.Response(status=204)
        if path in ("sys/leases/renew", "sys/leases/revoke") and method == "PUT":
            return self._lease(path.rpartition("/")[2], body)
        mount, kind, rest = _split(path)
        if method == "GET" and kind == "data" and f"{mount}/{rest}" in self.kv:
            return self._read_kv(f"{mount}/{rest}", query)
        if method == "GET" and kind == "creds" and rest and "/" not in rest:
            return self._creds(mount, rest)
        return _errors(404, "")

    def _login(self, request: web.Request, body: bytes) -> web.Response:
        doc = _json(request, body)
        if doc is None or set(doc) != {"role_id", "secret_id"}:
            return _errors(400, "missing role_id or secret_id")
        if doc["role_id"] != self.role_id or doc["secret_id"] != self.secret_id:
            return _errors(400, "invalid role or secret ID")
        token = "hvs.CANARY" + secrets.token_urlsafe(24)
        self.tokens[token] = self.clock() + self.token_ttl
        self.issued.append(token)
        auth = {
            "client_token": token,
            "accessor": secrets.token_hex(12),
            "policies": ["default", "turret"],
            "token_policies": ["default", "turret"],
            "metadata": {"role_name": "turret"},
            "lease_duration": self.token_ttl,
            "renewable": True,
            "token_type": "service",
            "orphan": True,
        }
        return _ok({"auth": auth, "data": None, "lease_id": "", "lease_duration": 0})

    def _read_kv(self, key: str, query: dict[str, str]) -> web.Response:
        versions = self.kv[key]
        number = int(query.get("version", "0") or 0) or len(versions)
        if not 1 <= number <= len(versions):
            return _errors(404, "")
        data, created = versions[number - 1]
        metadata = {
            "created_time": _rfc3339(created),
            "custom_metadata": None,
            "deletion_time": "",
            "destroyed": False,
            "version": number,
        }
        return _ok(
            {"data": {"data": data, "metadata": metadata}, "lease_id": "", "lease_duration": 0}
        )

    def _creds(self, mount: str, role: str) -> web.Response:
        lease_id = f"{mount}/creds/{role}/{secrets.token_hex(8)}"
        now = self.clock()
        data = {"token": "CANARY-lease-" + secrets.token_hex(12), "accessor": secrets.token_hex(4)}
        self.issued.append(data["token"])
        self.leases[lease_id] = Lease(
            lease_id, data, now + self.lease_ttl, now + self.lease_max_ttl
        )
        return _ok(
            {
                "lease_id": lease_id,
                "lease_duration": self.lease_ttl,
                "renewable": True,
                "data": data,
            }
        )

    def _lease(self, action: str, body: bytes) -> web.Response:
        try:
            doc = json.loads(body)
        except ValueError:
            return _errors(400, "failed to parse JSON input")
        allowed = {"lease_id", "increment"} if action == "renew" else {"lease_id"}
        if not isinstance(doc, dict) or "lease_id" not in doc or not set(doc) <= allowed:
            return _errors(400, "lease_id is required")
        lease = self.leases.get(doc["lease_id"])
        now = self.clock()
        if lease is None or lease.revoked or lease.expires <= now:
            return _errors(400, "lease not found")
        if action == "revoke":
            lease.revoked = True
            return web.Response(status=204)
        increment = doc.get("increment", self.lease_ttl)
        if not isinstance(increment, int):
            return _errors(400, "increment must be an integer number of seconds")
        lease.expires = min(now + increment, lease.max_expires)
        duration = int(lease.expires - now)
        return _ok({"lease_id": lease.lease_id, "renewable": True, "lease_duration": duration})


def _split(path: str) -> tuple[str, str, str]:
    """`mount/kind/rest` of a secrets-engine path (mounts here are one segment)."""
    mount, _, tail = path.partition("/")
    kind, _, rest = tail.partition("/")
    return mount, kind, rest


def _json(request: web.Request, body: bytes) -> dict[str, Any] | None:
    if request.content_type != "application/json":
        return None
    try:
        doc = json.loads(body)
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None


def _ok(doc: dict[str, Any]) -> web.Response:
    base = {"request_id": secrets.token_hex(8), "renewable": False, "wrap_info": None}
    base.update({"warnings": None, "auth": None})
    base.update(doc)
    return web.json_response(base)


def _errors(status: int, message: str) -> web.Response:
    return web.json_response({"errors": [message] if message else []}, status=status)


def _malformed(kind: str) -> web.Response:
    bodies = {
        "not-json": b"<html>proxy error</html>",
        "no-token": json.dumps({"auth": {"lease_duration": 60}}).encode(),
        "bad-ttl": json.dumps(
            {"auth": {"client_token": "t", "lease_duration": "soon", "renewable": True}}
        ).encode(),
        "no-data": json.dumps({"data": None, "lease_id": "", "lease_duration": 0}).encode(),
        "array": b"[]",
        "no-lease-id": json.dumps(
            {"lease_duration": 60, "renewable": True, "data": {"token": "t"}}
        ).encode(),
        "bad-renewable": json.dumps(
            {
                "lease_id": "x/creds/y/1",
                "lease_duration": 60,
                "renewable": "yes",
                "data": {"token": "t"},
            }
        ).encode(),
        "negative-ttl": json.dumps(
            {
                "lease_id": "x/creds/y/1",
                "lease_duration": -5,
                "renewable": True,
                "data": {"token": "t"},
            }
        ).encode(),
        "no-field": json.dumps(
            {"lease_id": "x/creds/y/1", "lease_duration": 60, "renewable": True, "data": {}}
        ).encode(),
        "huge-ttl-bool": json.dumps(
            {
                "lease_id": "x/creds/y/1",
                "lease_duration": True,
                "renewable": True,
                "data": {"token": "t"},
            }
        ).encode(),
    }
    return web.Response(body=bodies[kind], content_type="application/json")


def _rfc3339(when: float) -> str:
    """As Vault writes times: UTC, nanoseconds, Z."""
    stamp = datetime.fromtimestamp(when, UTC)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.%f") + "214Z"
