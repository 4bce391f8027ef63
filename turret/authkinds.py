"""How a service's credential is put into a request: each auth kind of the config in one place.

A kind is a frozen value that holds credential *names*, never values. Its class says how its
section of the config is read (`read`), which credentials it uses and how (`uses`), and what it
adds to each request once its credentials are loaded (`injection`). The config reader passes
anything that speaks `SpecReader` (its checker does), so this module stays below the config.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, Self
from urllib.parse import quote

from turret.model import CREDENTIAL_NAME, HEADER_NAME, NAME, QUERY_NAME, Config
from turret.secret import Secret

# How a credential is used: "header" when sent in an HTTP header as is (so CR, LF and NUL would
# be header injection), "value" otherwise.
Uses = dict[str, str]
Secrets = Mapping[str, Secret]


class SpecReader(Protocol):
    """What a kind needs to read its config section and report problems by key path."""

    def fail(self, path: str, message: str) -> None: ...

    def mapping(
        self, path: str, value: Any, required: set[str], optional: set[str]
    ) -> dict[str, Any] | None: ...

    def string(
        self, path: str, value: Any, pattern: re.Pattern[str] | None = None
    ) -> str | None: ...


Signer = Callable[[str, str, Mapping[str, str], bytes], dict[str, str]]


@dataclass(frozen=True)
class Injection:
    """What Turret adds to every request to one service. Holds secret values: never log it."""

    headers: dict[str, str] = field(default_factory=dict)
    query: tuple[str, str] | None = None  # (name, already URL-encoded value)
    login: tuple[str, str] | None = None  # (username, password) for a WebUI login
    # A signature over the whole request (AWS SigV4): (method, url, headers, body) -> the headers
    # to send. Applied last, to the final request, since any later change would break it.
    sign: Signer | None = None

    def __repr__(self) -> str:
        return (
            f"Injection(headers={sorted(self.headers)}, query={bool(self.query)},"
            f" login={bool(self.login)}, sign={self.sign is not None})"
        )

    def values(self) -> list[str]:
        """Every secret value this injection sends, for the echo and exfiltration guards."""
        return [*self.headers.values(), *(self.login[1:] if self.login else ())]


@dataclass(frozen=True)
class CredentialRef:
    """A value to be read from the credential `name`."""

    name: str


Value = str | CredentialRef  # a literal, or a credential


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def read_value(r: SpecReader, path: str, value: Any) -> Value | None:
    """A literal string, or `{credential: NAME}`."""
    if isinstance(value, dict):
        m = r.mapping(path, value, {"credential"}, set())
        name = r.string(
            _join(path, "credential"), m.get("credential") if m else None, CREDENTIAL_NAME
        )
        return CredentialRef(name) if name else None
    text = r.string(path, value)
    if text is not None and any(c in text for c in "\r\n\0:"):
        r.fail(path, "a literal must not contain ':', CR, LF or NUL")
        return None
    return text


def _reveal(value: Value, secrets: Secrets) -> str:
    return secrets[value.name].reveal() if isinstance(value, CredentialRef) else value


def _value_uses(*values: Value) -> Uses:
    return {v.name: "value" for v in values if isinstance(v, CredentialRef)}


@dataclass(frozen=True)
class BearerAuth:
    """`bearer: CREDENTIAL`: `Authorization: Bearer <value>`."""

    credential: str
    key: ClassVar[str] = "bearer"

    @classmethod
    def read(cls, r: SpecReader, path: str, spec: Any) -> BearerAuth | None:
        cred = r.string(path, spec, CREDENTIAL_NAME)
        return cls(cred) if cred else None

    def uses(self) -> Uses:
        return {self.credential: "header"}

    def injection(self, secrets: Secrets) -> Injection:
        return Injection({"Authorization": "Bearer " + secrets[self.credential].reveal()})


@dataclass(frozen=True)
class _UserPassword:
    """A username and a password, each a literal or a credential (`{username, password}`)."""

    username: Value
    password: Value

    @classmethod
    def read(cls, r: SpecReader, path: str, spec: Any) -> Self | None:
        pair = _read_pair(r, path, spec)
        return cls(*pair) if pair else None

    def uses(self) -> Uses:
        return _value_uses(self.username, self.password)


@dataclass(frozen=True)
class BasicAuth(_UserPassword):
    """`basic: {username, password}`: HTTP Basic."""

    key: ClassVar[str] = "basic"

    def injection(self, secrets: Secrets) -> Injection:
        pair = f"{_reveal(self.username, secrets)}:{_reveal(self.password, secrets)}"
        return Injection({"Authorization": "Basic " + base64.b64encode(pair.encode()).decode()})


@dataclass(frozen=True)
class HeaderAuth:
    """`header: {name, value, prefix?}`: one header carrying `prefix + <value>`."""

    name: str
    credential: str
    prefix: str = ""
    key: ClassVar[str] = "header"

    @classmethod
    def read(cls, r: SpecReader, path: str, spec: Any) -> HeaderAuth | None:
        m = r.mapping(path, spec, {"name", "value"}, {"prefix"})
        if m is None:
            return None
        name = r.string(_join(path, "name"), m.get("name"), HEADER_NAME)
        cred = r.string(_join(path, "value"), m.get("value"), CREDENTIAL_NAME)
        prefix = m.get("prefix", "")
        if not isinstance(prefix, str) or any(c in prefix for c in "\r\n\0"):
            r.fail(_join(path, "prefix"), "must be a string without CR, LF or NUL")
            return None
        return cls(name, cred, prefix) if name and cred else None

    def uses(self) -> Uses:
        return {self.credential: "header"}

    def injection(self, secrets: Secrets) -> Injection:
        return Injection({self.name: self.prefix + secrets[self.credential].reveal()})


@dataclass(frozen=True)
class QueryAuth:
    """`query: {name, value}`: a query parameter, replacing any the caller sent by that name."""

    name: str
    credential: str
    key: ClassVar[str] = "query"

    @classmethod
    def read(cls, r: SpecReader, path: str, spec: Any) -> QueryAuth | None:
        m = r.mapping(path, spec, {"name", "value"}, set())
        if m is None:
            return None
        name = r.string(_join(path, "name"), m.get("name"), QUERY_NAME)
        cred = r.string(_join(path, "value"), m.get("value"), CREDENTIAL_NAME)
        return cls(name, cred) if name and cred else None

    def uses(self) -> Uses:
        return {self.credential: "value"}

    def injection(self, secrets: Secrets) -> Injection:
        return Injection(query=(self.name, quote(secrets[self.credential].reveal(), safe="")))


@dataclass(frozen=True)
class LoginAuth(_UserPassword):
    """`login: {username, password}`: qBittorrent's WebUI login. Turret logs in and keeps the
    session cookie to itself (`turret.login`)."""

    key: ClassVar[str] = "login"

    def injection(self, secrets: Secrets) -> Injection:
        return Injection(login=(_reveal(self.username, secrets), _reveal(self.password, secrets)))


@dataclass(frozen=True)
class ProviderAuth:
    """`auth: {provider: NAME, ...}`: the credential comes from the named entry of
    `providers:` (`turret.config.providers`); the other keys are its scope for this service,
    read by the provider's type once every provider is known."""

    provider: str
    settings: Mapping[str, Any] = field(default_factory=dict, hash=False)
    key: ClassVar[str] = "provider"

    @classmethod
    def read(cls, r: SpecReader, path: str, spec: dict[str, Any]) -> ProviderAuth | None:
        name = r.string(_join(path, "provider"), spec.get("provider"), NAME)
        return cls(name, {k: v for k, v in spec.items() if k != "provider"}) if name else None

    def uses(self) -> Uses:
        """None of its own: the provider's credentials are the provider's (`providers:`)."""
        return {}

    def injection(self, secrets: Secrets) -> Injection:
        """Never: the provider hands out the injection, per use."""
        raise TypeError("a provider's credential comes from the provider, not from secrets")


def _read_pair(r: SpecReader, path: str, spec: Any) -> tuple[Value, Value] | None:
    m = r.mapping(path, spec, {"username", "password"}, set())
    if m is None:
        return None
    user = read_value(r, _join(path, "username"), m.get("username"))
    password = read_value(r, _join(path, "password"), m.get("password"))
    return None if user is None or password is None else (user, password)


Auth = BearerAuth | BasicAuth | HeaderAuth | QueryAuth | LoginAuth | ProviderAuth
KINDS: dict[str, type[Auth]] = {
    kind.key: kind for kind in (BearerAuth, BasicAuth, HeaderAuth, QueryAuth, LoginAuth)
}


def read_auth(r: SpecReader, path: str, value: Any) -> Auth | None:
    """A service's `auth:` section: exactly one of the kinds, or `provider:` and its scope."""
    if isinstance(value, dict) and "provider" in value:
        return ProviderAuth.read(r, path, value)
    body = r.mapping(path, value, set(), set(KINDS))
    if body is None:
        return None
    if len(body) != 1:
        r.fail(path, f"must have exactly one of: {', '.join(KINDS)}")
        return None
    ((key, spec),) = body.items()
    kind = KINDS.get(key)
    if kind is None:  # an unknown key: `mapping` has reported it
        return None
    return kind.read(r, _join(path, key), spec)


def merge_uses(*uses: Uses) -> Uses:
    """Credential uses from several places; a credential sent in a header anywhere is "header"."""
    out: Uses = {}
    for each in uses:
        for name, use in each.items():
            if out.get(name) != "header":
                out[name] = use
    return out


def credential_uses(config: Config) -> Uses:
    """Every credential name `config` references, mapped to how it is used."""
    agents = {a.token_credential: "value" for a in config.agents.values() if a.token_credential}
    key = {config.params_key: "value"} if config.params_key else {}
    chain = {config.chain_key: "value"} if config.chain_key else {}
    providers = (p.uses() for p in config.providers.values())
    services = (s.auth.uses() for s in config.services.values())
    return merge_uses(*services, agents, key, chain, *providers)
