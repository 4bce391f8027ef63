"""HashiCorp Vault and OpenBao (same HTTP API) on the wire: AppRole login, KV v2 reads, dynamic
credentials and their leases (renew, revoke), and revoking Turret's own token. aiohttp, not hvac
(which is synchronous). Each answer is checked for the shape the API documents; anything else
is a `MintFailed`, and nothing of an answer's error text is kept (it can quote the request).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import aiohttp
from yarl import URL

from turret.providers.fetch import call, int_field, json_object, text_field, time_field
from turret.providers.minting import MintFailed
from turret.secret import Secret


@dataclass(frozen=True)
class VaultServer:
    """Where Vault is: its base URL (…:8200) and the namespace, if any (Enterprise, OpenBao)."""

    url: str
    namespace: str | None = None
    timeout: float = 5.0

    def headers(self, token: Secret | None = None) -> dict[str, str]:
        """The headers of every call: the token, the namespace, and `X-Vault-Request` (which a
        Vault Agent in front may require, against browser-driven requests)."""
        headers = {"X-Vault-Request": "true"}
        if token is not None:
            headers["X-Vault-Token"] = token.reveal()
        if self.namespace:
            headers["X-Vault-Namespace"] = self.namespace
        return headers

    def endpoint(self, *segments: str) -> URL:
        """`/v1/` plus `segments`, each percent-encoded (a `/` inside one stays a separator
        only where the caller split it)."""
        path = "/".join(quote(s, safe="") for s in segments)
        return URL(self.url.rstrip("/") + "/v1/" + path, encoded=True)


@dataclass(frozen=True)
class VaultToken:
    """Turret's own Vault token and when it stops being valid."""

    token: Secret
    expires_at: float


@dataclass(frozen=True)
class KvValue:
    """One field of a KV v2 secret version, with the version's number and creation time."""

    value: Secret
    version: int
    created_at: float


@dataclass(frozen=True)
class VaultLease:
    """A dynamic credential: one field of its data, its lease and when the lease ends."""

    lease_id: str
    value: Secret
    expires_at: float
    renewable: bool


async def _json_call(
    session: aiohttp.ClientSession,
    server: VaultServer,
    *,
    method: str,
    url: URL,
    token: Secret | None,
    doc: dict[str, Any] | None,
    what: str,
) -> tuple[int, bytes]:
    headers = server.headers(token)
    body = None
    if doc is not None:
        headers["Content-Type"] = "application/json"
        body = json.dumps(doc).encode()
    status, data = await call(
        session, method, url, headers=headers, body=body, within=server.timeout, what=what
    )
    if status >= 300:
        # Vault's `{"errors": [...]}` texts are not kept: a status says enough to act on.
        raise MintFailed(f"{what}: HTTP {status}")
    return status, data


async def login_approle(
    session: aiohttp.ClientSession,
    server: VaultServer,
    role_id: Secret,
    secret_id: Secret,
    now: float,
) -> VaultToken:
    """`POST auth/approle/login`: a token for Turret, valid for its `lease_duration`."""
    what = "vault approle login"
    doc = {"role_id": role_id.reveal(), "secret_id": secret_id.reveal()}
    url = server.endpoint("auth", "approle", "login")
    _, data = await _json_call(
        session, server, method="POST", url=url, token=None, doc=doc, what=what
    )
    auth = json_object(data, what).get("auth")
    if not isinstance(auth, dict):
        raise MintFailed(f"{what}: no 'auth' in the answer")
    token = text_field(auth, "client_token", what)
    return VaultToken(Secret(token), now + int_field(auth, "lease_duration", what))


async def read_kv(
    session: aiohttp.ClientSession,
    server: VaultServer,
    token: Secret,
    spec: tuple[str, str, str, int | None],
) -> KvValue:
    """`GET {mount}/data/{path}[?version=N]`, field `field` of `data.data`; `spec` is
    (mount, path, field, version)."""
    mount, path, field, version = spec
    what = "vault kv read"
    url = server.endpoint(mount, "data", *path.split("/"))
    if version is not None:
        url = url.with_query(version=str(version))
    _, data = await _json_call(
        session, server, method="GET", url=url, token=token, doc=None, what=what
    )
    outer = json_object(data, what).get("data")
    inner = outer.get("data") if isinstance(outer, dict) else None
    metadata = outer.get("metadata") if isinstance(outer, dict) else None
    if not isinstance(inner, dict) or not isinstance(metadata, dict):
        raise MintFailed(f"{what}: no 'data.data' and 'data.metadata' (not a KV v2 mount?)")
    if field not in inner:
        raise MintFailed(f"{what}: the secret has no field {field!r}")
    value = text_field(inner, field, what)
    created = time_field(metadata, "created_time", what)
    return KvValue(Secret(value), int_field(metadata, "version", what), created)


async def read_creds(
    session: aiohttp.ClientSession,
    server: VaultServer,
    token: Secret,
    spec: tuple[str, str, str],
    now: float,
) -> VaultLease:
    """`GET {mount}/creds/{role}`: a new dynamic credential, field `field` of its data; `spec`
    is (mount, role, field)."""
    mount, role, field = spec
    what = "vault dynamic credential"
    url = server.endpoint(mount, "creds", role)
    _, data = await _json_call(
        session, server, method="GET", url=url, token=token, doc=None, what=what
    )
    answer = json_object(data, what)
    values = answer.get("data")
    if not isinstance(values, dict) or field not in values:
        raise MintFailed(f"{what}: the answer's data has no field {field!r}")
    value = text_field(values, field, what)
    lease_id = text_field(answer, "lease_id", what)
    duration = int_field(answer, "lease_duration", what)
    renewable = answer.get("renewable")
    if not isinstance(renewable, bool):
        raise MintFailed(f"{what}: 'renewable' missing or not a boolean")
    return VaultLease(lease_id, Secret(value), now + duration, renewable)


async def renew_lease(
    session: aiohttp.ClientSession,
    server: VaultServer,
    token: Secret,
    *,
    lease_id: str,
    increment: int,
    now: float,
) -> float:
    """`PUT sys/leases/renew`: the lease's new end (Vault may grant less than `increment`)."""
    what = "vault lease renew"
    doc = {"lease_id": lease_id, "increment": increment}
    url = server.endpoint("sys", "leases", "renew")
    _, data = await _json_call(
        session, server, method="PUT", url=url, token=token, doc=doc, what=what
    )
    return now + int_field(json_object(data, what), "lease_duration", what)


async def revoke_lease(
    session: aiohttp.ClientSession, server: VaultServer, token: Secret, lease_id: str
) -> None:
    """`PUT sys/leases/revoke`: the credential stops working now."""
    url = server.endpoint("sys", "leases", "revoke")
    doc = {"lease_id": lease_id}
    await _json_call(
        session, server, method="PUT", url=url, token=token, doc=doc, what="vault revoke"
    )


async def revoke_self(session: aiohttp.ClientSession, server: VaultServer, token: Secret) -> None:
    """`POST auth/token/revoke-self`: Turret's own token stops working (and with it every lease
    it created that Vault ties to it)."""
    url = server.endpoint("auth", "token", "revoke-self")
    what = "vault token revoke"
    await _json_call(session, server, method="POST", url=url, token=token, doc=None, what=what)
