"""GitHub App installation tokens (`providers: {NAME: {type: github_app, ...}}`).

Per use, Turret signs the app's JWT (RS256 with the app's private key; `iat` 60 s in the past
against clock drift, `exp` under GitHub's 10-minute limit, `iss` the client id or app id) and
asks `POST /app/installations/{id}/access_tokens` for a token narrowed to the service's scope
(`repositories`, `permissions`: only what the call needs). The token goes upstream as
`Authorization: Bearer`; it is cached per scope until 5 minutes before its `expires_at`
(`turret.providers.minting`), and revoked with `DELETE /installation/token` on killswitch.

An answer that is not exactly a 201 with a token, a future `expires_at`, and no permission or
repository beyond what was asked for fails the mint (and so the request: fail closed).
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Mapping
from typing import Any

import aiohttp
import jwt
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from yarl import URL

from turret import __version__
from turret.authkinds import Injection, Secrets
from turret.config.providers import GithubAppSpec, ProviderSpec
from turret.errors import AddressRefused, CredentialError, UnprocessableEntity
from turret.model import JSON, Service
from turret.providers import CredentialProvider, digest
from turret.providers.minting import Hooks, Minted, MintFailed, MintingProvider, MintSettings
from turret.upstream import read_at_most

API_VERSION = "2022-11-28"
ACCEPT = "application/vnd.github+json"
JWT_BACKDATE = 60  # seconds: GitHub's advice against clock drift
JWT_LIFETIME = 540  # seconds after now: under GitHub's 10-minute maximum, with room for drift
REFRESH_BEFORE = 300.0  # installation tokens live an hour; a new one 5 minutes before expiry
MAX_ANSWER = 64 * 1024
_TOKEN = re.compile(r"[\x21-\x7e]{1,4096}")  # printable ASCII, no space: sendable in a header
_LEVELS = {"read": 1, "write": 2, "admin": 3}
REPOSITORY_NAME = re.compile(r"[A-Za-z0-9_.-]{1,100}")  # GitHub's repository name characters


class GithubAppProvider(MintingProvider):
    """One service's installation tokens, minted per distinct scope."""

    kind = "github_app"

    def __init__(
        self, service: Service, spec: GithubAppSpec, pem: str, hooks: Hooks | None = None
    ) -> None:
        scope = getattr(service.auth, "settings", {}).get("scope", {})
        settings = MintSettings(refresh_before=REFRESH_BEFORE)
        super().__init__(service.name, spec.name, {"scope": scope}, settings=settings, hooks=hooks)
        self.spec = spec
        self._pem_digest = digest(pem)
        try:
            key = load_pem_private_key(pem.encode(), password=None)
        except (ValueError, TypeError):
            raise CredentialError(
                [f"credential {spec.private_key!r} is not an unencrypted PEM private key"]
            ) from None
        if not isinstance(key, RSAPrivateKey):
            raise CredentialError([f"credential {spec.private_key!r} is not an RSA key"])
        self._key = key

    @property
    def identity(self) -> tuple[object, ...]:
        """The app, installation, API and key as well: a new key or app mints anew."""
        return (*super().identity, self.spec, self._pem_digest)

    def app_jwt(self) -> str:
        """The app's JWT, signed now."""
        now = int(self.hooks.wall())
        claims = {"iat": now - JWT_BACKDATE, "exp": now + JWT_LIFETIME, "iss": self.spec.issuer}
        return jwt.encode(claims, self._key, algorithm="RS256")

    def check_scope(self, scope: Mapping[str, JSON]) -> None:
        """Each repository a call's parameters put in the scope is a repository name."""
        wanted = scope.get("scope")
        repos = wanted.get("repositories") if isinstance(wanted, dict) else None
        for repo in repos if isinstance(repos, list) else ():
            if not isinstance(repo, str) or not REPOSITORY_NAME.fullmatch(repo):
                raise UnprocessableEntity(
                    "a parameter is not a repository name this service's credential can be"
                    " scoped to",
                    reason="credential scope: a parameter is not a repository name",
                )

    async def mint(self, scope: Mapping[str, JSON], deadline: float) -> Minted:
        """An installation token for `scope` (`{"scope": {repositories?, permissions?}}`)."""
        wanted = scope.get("scope")
        body = wanted if isinstance(wanted, dict) else {}
        path = f"/app/installations/{self.spec.installation_id}/access_tokens"
        status, answer = await self._call("POST", path, self.app_jwt(), body, deadline)
        if status != 201:
            raise MintFailed(f"token request answered HTTP {status}")
        token, expires_at = _issued(answer, body)
        return Minted(Injection({"Authorization": f"Bearer {token}"}), expires_at, secrets=(token,))

    def revocable(self, minted: Minted) -> bool:
        """Every installation token can be revoked (`DELETE /installation/token`)."""
        return True

    async def revoke_lease(self, minted: Minted) -> None:
        """`DELETE /installation/token`, authenticated by the token itself."""
        token = minted.secrets[0]
        deadline = self.hooks.monotonic() + self.spec.timeout
        status, _ = await self._call("DELETE", "/installation/token", token, None, deadline)
        if status != 204:
            raise MintFailed(f"token revocation answered HTTP {status}")

    async def _call(
        self, method: str, path: str, bearer: str, body: JSON, deadline: float
    ) -> tuple[int, bytes]:
        """One request to the API, through the address policy of `api_url`."""
        http = self.sessions.session_for(self.spec.address_policy)
        headers = {
            "Accept": ACCEPT,
            "Authorization": f"Bearer {bearer}",
            "X-GitHub-Api-Version": API_VERSION,
            "User-Agent": f"turret/{__version__}",
        }
        timeout = aiohttp.ClientTimeout(total=min(self.remaining(deadline), self.spec.timeout))
        try:
            async with http.request(
                method,
                URL(self.spec.api_url + path, encoded=True),
                headers=headers,
                json=body if body is not None else None,
                allow_redirects=False,
                timeout=timeout,
            ) as resp:
                data = await read_at_most(resp.content, MAX_ANSWER)
                status = resp.status
        except (TimeoutError, aiohttp.ServerTimeoutError):
            raise MintFailed("GitHub did not answer in time") from None
        except aiohttp.ClientConnectorError as exc:
            refused = isinstance(exc.os_error, AddressRefused)
            raise MintFailed(
                "api_url resolves to an address its policy does not allow"
                if refused
                else "GitHub could not be reached"
            ) from None
        except (aiohttp.ClientError, OSError) as exc:
            raise MintFailed(f"GitHub request failed ({type(exc).__name__})") from None
        if data is None:
            raise MintFailed(f"answer larger than {MAX_ANSWER} bytes")
        return status, data


def _issued(answer: bytes, asked: Mapping[str, JSON]) -> tuple[str, float]:
    """The token and its expiry from a 201's body; `MintFailed` unless it is well formed and
    no broader than `asked`."""
    try:
        doc = json.loads(answer)
    except (ValueError, UnicodeDecodeError):
        raise MintFailed("token answer is not JSON") from None
    if not isinstance(doc, dict):
        raise MintFailed("token answer is not a JSON object")
    token, expires = doc.get("token"), doc.get("expires_at")
    if not isinstance(token, str) or not _TOKEN.fullmatch(token):
        raise MintFailed("token answer has no usable token")
    if not isinstance(expires, str):
        raise MintFailed("token answer has no expires_at")
    try:
        moment = dt.datetime.fromisoformat(expires)
    except ValueError:
        raise MintFailed("token answer's expires_at is not a time") from None
    if moment.tzinfo is None:
        raise MintFailed("token answer's expires_at has no time zone")
    _within(doc, asked)
    return token, moment.timestamp()


def _within(doc: dict[str, Any], asked: Mapping[str, JSON]) -> None:
    """`MintFailed` if GitHub granted more than was asked for: a permission not asked for or
    at a higher level, or a repository not named."""
    wanted = asked.get("permissions")
    granted = doc.get("permissions", {})
    if isinstance(wanted, dict):
        if not isinstance(granted, dict):
            raise MintFailed("token answer's permissions are not a mapping")
        for name, level in granted.items():
            limit = wanted.get(name)
            if not isinstance(limit, str) or _LEVELS.get(str(level), 9) > _LEVELS[limit]:
                raise MintFailed("token has a permission beyond its scope")
    names = asked.get("repositories")
    if isinstance(names, list):
        repos = doc.get("repositories")
        if not isinstance(repos, list):
            raise MintFailed("token answer does not list its repositories")
        allowed = {str(n).lower() for n in names}
        for repo in repos:
            name = repo.get("name") if isinstance(repo, dict) else None
            if not isinstance(name, str) or name.lower() not in allowed:
                raise MintFailed("token has a repository beyond its scope")


def factory(
    service: Service, spec: ProviderSpec, secrets: Secrets, hooks: Hooks | None
) -> CredentialProvider:
    """The `github_app` provider of `service` (`turret.providers.build.FACTORIES`)."""
    if not isinstance(spec, GithubAppSpec):
        raise TypeError("FACTORIES is keyed by the spec's type")
    return GithubAppProvider(service, spec, secrets[spec.private_key].reveal(), hooks)
