"""A fake GitHub REST API, written from GitHub's documentation, checking what the real one
requires of a GitHub App:

- `POST /app/installations/{id}/access_tokens` (docs: "Create an installation access token for
  an app"): `Authorization: Bearer <JWT>` signed RS256 with the app's key and carrying `iat`,
  `exp` (at most 10 minutes ahead) and `iss` (the app id or client id); `Accept:
  application/vnd.github+json`; `X-GitHub-Api-Version: 2022-11-28`; a `User-Agent`; a JSON
  body with only `repositories` (at most 500 names), `repository_ids` and `permissions` (each
  `read`, `write` or `admin`). Answers 201 with `token`, `expires_at` (ISO 8601, an hour on),
  `permissions`, `repository_selection` and `repositories`.
- `DELETE /installation/token` (docs: "Revoke an installation access token"): authenticated by
  the installation token itself; 204.
- `GET /repos/{owner}/{repo}` and `/echo`: what the token is then used for, refusing (401) a
  token that is unknown, revoked, expired, or not for that repository.

`mode` makes the token endpoint misbehave, for the fail-closed tests.
"""

from __future__ import annotations

import datetime as dt
import json
import secrets
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import jwt
from aiohttp import web
from aiohttp.test_utils import TestServer
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

INSTALLATION = 4242
APP_ID = 1234
OWNER = "octo"
API_VERSION = "2022-11-28"


def new_key() -> tuple[str, rsa.RSAPublicKey]:
    """A fresh RSA key: its PEM (what the operator stores as a credential) and public half."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,  # GitHub's downloads are PKCS#1
        serialization.NoEncryption(),
    ).decode()
    return pem, key.public_key()


@dataclass
class Issued:
    token: str
    expires_at: float
    repositories: list[str] | None
    permissions: dict[str, str]
    revoked: bool = False


@dataclass
class FakeGitHub:
    """The fake's state: what it was asked, what it issued, and how it misbehaves."""

    public_key: rsa.RSAPublicKey
    now: Callable[[], float]
    issuer: str = str(APP_ID)
    mode: str = "ok"
    token_requests: list[dict[str, object]] = field(default_factory=list)
    claims: list[dict[str, object]] = field(default_factory=list)
    refusals: list[str] = field(default_factory=list)  # why a request was refused (400s)
    issued: list[Issued] = field(default_factory=list)
    tokens: list[str] = field(default_factory=list)  # every token issued: the leak check's
    deletes: int = 0
    used: list[tuple[str, str]] = field(default_factory=list)  # (repo, token) per API call

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/app/installations/{id}/access_tokens", self._access_tokens)
        app.router.add_delete("/installation/token", self._revoke)
        app.router.add_get("/repos/{owner}/{repo}", self._repo)
        app.router.add_get("/echo", self._echo)
        return app

    def _refuse(self, status: int, why: str) -> web.Response:
        self.refusals.append(why)
        return web.json_response({"message": why}, status=status)

    def _common(self, request: web.Request) -> str | None:
        if request.headers.get("Accept") != "application/vnd.github+json":
            return "Accept must be application/vnd.github+json"
        if request.headers.get("X-GitHub-Api-Version") != API_VERSION:
            return "X-GitHub-Api-Version must be 2022-11-28"
        if not request.headers.get("User-Agent"):
            return "a User-Agent is required"
        return None

    def _jwt_problem(self, request: web.Request) -> str | None:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme != "Bearer":
            return "a JWT is required: Authorization: Bearer"
        try:
            header = jwt.get_unverified_header(token)
            claims = jwt.decode(
                token,
                self.public_key,
                algorithms=["RS256"],
                # Times are checked below against the fake's clock (the tests move it).
                options={
                    "require": ["iat", "exp", "iss"],
                    "verify_exp": False,
                    "verify_iat": False,
                },
            )
        except jwt.PyJWTError as exc:
            return f"JWT refused: {type(exc).__name__}"
        self.claims.append(claims)
        now = self.now()
        if header.get("alg") != "RS256":
            return "JWT must be RS256"
        if claims["iss"] != self.issuer:
            return "JWT iss is not this app"
        if not claims["iat"] <= now < claims["exp"] or claims["exp"] > now + 600:
            return "JWT iat/exp out of range (exp at most 10 minutes ahead)"
        return None

    async def _access_tokens(self, request: web.Request) -> web.Response:
        problem = self._common(request) or self._jwt_problem(request)
        if problem:
            return self._refuse(401, problem)
        if request.match_info["id"] != str(INSTALLATION):
            return self._refuse(404, "no such installation")
        try:
            body = json.loads(await request.read() or b"{}")
        except ValueError:
            return self._refuse(400, "body is not JSON")
        self.token_requests.append(body)
        problem = _body_problem(body)
        if problem:
            return self._refuse(422, problem)
        return self._answer(body)

    def _answer(self, body: dict[str, object]) -> web.Response:
        mode, now = self.mode, self.now()
        if mode == "500":
            return web.json_response({"message": "Server Error"}, status=500)
        if mode == "redirect":
            raise web.HTTPFound("http://127.0.0.1:9/elsewhere")
        if mode == "nonjson":
            return web.Response(status=201, text="<html>ok</html>", content_type="text/html")
        if mode == "huge":
            return web.json_response({"token": "x", "pad": "y" * 200_000}, status=201)
        repos = body.get("repositories")
        names = [str(r) for r in repos] if isinstance(repos, list) else None
        perms = body.get("permissions")
        granted = {str(k): str(v) for k, v in perms.items()} if isinstance(perms, dict) else {}
        if mode == "broader":
            granted = {**granted, "administration": "write"}
        token = "ghs_" + secrets.token_urlsafe(27)
        expires = now + 3600 if mode != "past" else now - 10
        self.issued.append(Issued(token, expires, names, granted))
        self.tokens.append(token)
        doc: dict[str, object] = {
            "token": token,
            "expires_at": _iso(expires),
            "permissions": granted,
            "repository_selection": "selected" if names is not None else "all",
        }
        if names is not None:
            doc["repositories"] = [
                {"id": 1000 + i, "name": n, "full_name": f"{OWNER}/{n}"}
                for i, n in enumerate(names)
            ]
        if mode == "missing_token":
            del doc["token"]
        return web.json_response(doc, status=201)

    def _installation_token(self, request: web.Request) -> Issued | None:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme not in ("Bearer", "token"):
            return None
        found = next((i for i in self.issued if secrets.compare_digest(i.token, token)), None)
        if found is None or found.revoked or found.expires_at <= self.now():
            return None
        return found

    async def _revoke(self, request: web.Request) -> web.Response:
        problem = self._common(request)
        if problem:
            return self._refuse(400, problem)
        issued = self._installation_token(request)
        if issued is None:
            return self._refuse(401, "Bad credentials")
        issued.revoked = True
        self.deletes += 1
        return web.Response(status=204)

    async def _repo(self, request: web.Request) -> web.Response:
        issued = self._installation_token(request)
        repo = request.match_info["repo"]
        if issued is None:
            return self._refuse(401, "Bad credentials")
        if issued.repositories is not None and repo not in issued.repositories:
            return self._refuse(404, "Not Found")  # GitHub hides what a token cannot see
        self.used.append((repo, issued.token))
        return web.json_response({"name": repo, "full_name": f"{OWNER}/{repo}", "private": True})

    async def _echo(self, request: web.Request) -> web.Response:
        """A debugging endpoint that reflects the request's headers (an upstream echo)."""
        return web.json_response({"headers": dict(request.headers)})


def _body_problem(body: object) -> str | None:
    if not isinstance(body, dict):
        return "body must be an object"
    unknown = set(body) - {"repositories", "repository_ids", "permissions"}
    if unknown:
        return f"unknown keys: {sorted(unknown)}"
    repos = body.get("repositories", [])
    if not isinstance(repos, list) or not all(isinstance(r, str) for r in repos):
        return "repositories must be a list of names"
    if len(repos) > 500:
        return "at most 500 repositories"
    perms = body.get("permissions", {})
    levels = ("read", "write", "admin")
    if not isinstance(perms, dict) or not all(v in levels for v in perms.values()):
        return "permissions must map names to read, write or admin"
    return None


def _iso(at: float) -> str:
    return dt.datetime.fromtimestamp(int(at), dt.UTC).isoformat().replace("+00:00", "Z")


async def serve(fake: FakeGitHub) -> AsyncIterator[TestServer]:
    """`fake` on loopback until the generator is closed."""
    server = TestServer(fake.app(), host="127.0.0.1")
    await server.start_server()
    try:
        yield server
    finally:
        await server.close()
