"""The config's `providers:` (named credential providers, each with a `type:`) and the services
that take their credential from one (`auth: {provider: NAME, ...}`).

Each provider type is a `ProviderSpec` subclass registered in `TYPES`: it reads its own keys,
names the credentials it needs (loaded like every other credential), and reads the keys a
service's `auth:` may add (its scope). A scope may name a capability parameter as `{param}`;
it is filled per call from the validated parameters (`fill`), so a credential is narrowed to
exactly what that call acts on. Checked at load: every capability of the service has each
parameter a placeholder names (required, or with a default), and no agent or group may proxy to
such a service (a proxied request has no parameters).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, Self

from turret.authkinds import ProviderAuth, Uses
from turret.config.checker import Checker
from turret.config.limits import read_address_policy
from turret.config.yamlload import join
from turret.errors import ConfigIssue, UnprocessableEntity
from turret.model import (
    CREDENTIAL_NAME,
    HEADER_NAME,
    JSON,
    NAME,
    Agent,
    Capability,
    Group,
    Service,
)
from turret.netpolicy import AddressPolicy

PLACEHOLDER = re.compile(r"\{([a-z][a-z0-9_]{0,63})\}")
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")


# --- placeholders ------------------------------------------------------------------------------


def placeholders(template: JSON, path: str = "") -> Iterator[tuple[str, str]]:
    """Every (dotted path, parameter name) a scope template's strings name."""
    if isinstance(template, str):
        for m in PLACEHOLDER.finditer(template):
            yield path, m[1]
    elif isinstance(template, list):
        for i, item in enumerate(template):
            yield from placeholders(item, join(path, i))
    elif isinstance(template, dict):
        for key, value in template.items():
            yield from placeholders(value, join(path, key))


def fill(template: JSON, params: Mapping[str, object]) -> JSON:
    """`template` with each `{param}` replaced by that parameter's value: a string that is only
    a placeholder takes the value as it is, one with text around it the value as text.
    `UnprocessableEntity` if a parameter is missing (a capability without it, or the proxy)."""
    if isinstance(template, str):
        whole = PLACEHOLDER.fullmatch(template)
        if whole:
            return _param(params, whole[1])
        return PLACEHOLDER.sub(lambda m: str(_param(params, m[1])), template)
    if isinstance(template, list):
        return [fill(item, params) for item in template]
    if isinstance(template, dict):
        return {key: fill(value, params) for key, value in template.items()}
    return template


def _param(params: Mapping[str, object], name: str) -> JSON:
    value = params.get(name)
    if not isinstance(value, str | int | float | bool):
        raise UnprocessableEntity(
            "this service's credential is scoped by a parameter the request does not have",
            reason=f"credential scope names parameter {name}, not in the request",
        )
    return value


def _check_braces(ck: Checker, path: str, template: JSON) -> None:
    """Braces only as `{param}` placeholders: anything else is a typo that would go out as is."""
    if isinstance(template, str):
        if "{" in PLACEHOLDER.sub("", template) or "}" in PLACEHOLDER.sub("", template):
            ck.fail(path, "braces are only for {param} placeholders (a lowercase name)")
    elif isinstance(template, list):
        for i, item in enumerate(template):
            _check_braces(ck, join(path, i), item)
    elif isinstance(template, dict):
        for key, value in template.items():
            _check_braces(ck, join(path, key), value)


# --- provider types ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProviderSpec:
    """One entry of `providers:`. A type sets `type`, `keys` (its own, besides `type:`) and
    `scope_keys` (what a service's `auth:` may add), and reads them in `read`."""

    name: str
    type: ClassVar[str] = ""
    required: ClassVar[frozenset[str]] = frozenset()
    optional: ClassVar[frozenset[str]] = frozenset()
    scope_keys: ClassVar[frozenset[str]] = frozenset()
    dev_only: ClassVar[bool] = False  # `turret serve` refuses it without --dev

    @classmethod
    def read(cls, ck: Checker, path: str, name: str, body: dict[str, Any]) -> Self | None:
        """The spec from `body` (its keys already checked against `required`/`optional`)."""
        raise NotImplementedError

    def uses(self) -> Uses:
        """The credentials this provider reads, and how (see `turret.authkinds.Uses`)."""
        return {}

    def read_scope(self, ck: Checker, path: str, body: dict[str, Any]) -> dict[str, JSON] | None:
        """A service's `auth:` keys besides `provider:` (its scope), checked; by default the
        `scope_keys` as they are."""
        return {k: v for k, v in body.items() if k in self.scope_keys}


TYPES: dict[str, type[ProviderSpec]] = {}


def register(cls: type[ProviderSpec]) -> type[ProviderSpec]:
    """Add a provider type to `TYPES` (a class decorator)."""
    TYPES[cls.type] = cls
    return cls


def _credential(ck: Checker, path: str, value: Any) -> str | None:
    return ck.string(path, value, CREDENTIAL_NAME)


@register
@dataclass(frozen=True)
class EnvSpec(ProviderSpec):
    """`type: env, variable: NAME`: a value from Turret's environment. Development and tests
    only: `turret serve` refuses it unless `--dev` is given."""

    variable: str = ""
    type: ClassVar[str] = "env"
    required: ClassVar[frozenset[str]] = frozenset({"variable"})
    scope_keys: ClassVar[frozenset[str]] = frozenset({"header", "prefix"})
    dev_only: ClassVar[bool] = True

    @classmethod
    def read(cls, ck: Checker, path: str, name: str, body: dict[str, Any]) -> Self | None:
        variable = ck.string(join(path, "variable"), body.get("variable"), ENV_NAME)
        return cls(name, variable) if variable else None

    def read_scope(self, ck: Checker, path: str, body: dict[str, Any]) -> dict[str, JSON] | None:
        """`header:` (default Authorization) and `prefix:` (default "Bearer ")."""
        return read_injected_header(ck, path, body)


def read_injected_header(ck: Checker, path: str, body: dict[str, Any]) -> dict[str, JSON] | None:
    """How a provider's value is sent, in a service's `auth:` scope: `header:` (default
    Authorization) and `prefix:` (default "Bearer ")."""
    header = ck.string(join(path, "header"), body.get("header", "Authorization"), HEADER_NAME)
    prefix = body.get("prefix", "Bearer ")
    if not isinstance(prefix, str) or any(c in prefix for c in "\r\n\0"):
        ck.fail(join(path, "prefix"), "must be a string without CR, LF or NUL")
        return None
    return {"header": header, "prefix": prefix} if header else None


GITHUB_PERMISSION = re.compile(r"[a-z][a-z_]{0,63}")
GITHUB_LEVELS = frozenset({"read", "write", "admin"})
GITHUB_REPO = re.compile(r"[A-Za-z0-9_.-]{1,100}|\{[a-z][a-z0-9_]{0,63}\}")
GITHUB_CLIENT_ID = re.compile(r"Iv[0-9A-Za-z.]{1,62}")
GITHUB_MAX_REPOSITORIES = 500  # GitHub's limit on `repositories` in one token request


@register
@dataclass(frozen=True)
class GithubAppSpec(ProviderSpec):
    """`type: github_app`: installation access tokens of a GitHub App, signed for with its
    private key (`private_key`: the credential holding the PEM)."""

    issuer: str = ""  # app_id or client_id: the JWT's `iss`
    private_key: str = ""
    installation_id: int = 0
    api_url: str = "https://api.github.com"
    address_policy: AddressPolicy = field(default_factory=AddressPolicy)
    timeout: float = 10.0
    type: ClassVar[str] = "github_app"
    required: ClassVar[frozenset[str]] = frozenset({"private_key", "installation_id"})
    optional: ClassVar[frozenset[str]] = frozenset(
        {"app_id", "client_id", "api_url", "allow_networks", "timeout"}
    )
    scope_keys: ClassVar[frozenset[str]] = frozenset({"scope"})

    @classmethod
    def read(cls, ck: Checker, path: str, name: str, body: dict[str, Any]) -> Self | None:
        if ("app_id" in body) == ("client_id" in body):
            ck.fail(path, "needs exactly one of app_id and client_id")
            return None
        issuer: str | None
        if "app_id" in body:
            app_id = ck.number(join(path, "app_id"), body["app_id"], 1, 2**53, integer=True)
            issuer = None if app_id is None else str(app_id)
        else:
            issuer = ck.string(join(path, "client_id"), body["client_id"], GITHUB_CLIENT_ID)
        key = _credential(ck, join(path, "private_key"), body.get("private_key"))
        installation = ck.number(
            join(path, "installation_id"), body.get("installation_id"), 1, 2**53, integer=True
        )
        url = ck.url(join(path, "api_url"), body.get("api_url", cls.api_url))
        networks = body.get("allow_networks", [])
        policy = read_address_policy(ck, join(path, "allow_networks"), networks)
        timeout = ck.number(join(path, "timeout"), body.get("timeout", 10), 0.1, 300, integer=False)
        if None in (issuer, key, installation, url, timeout):
            return None
        return cls(name, str(issuer), str(key), int(installation), str(url), policy, float(timeout))

    def uses(self) -> Uses:
        return {self.private_key: "value"}

    def read_scope(self, ck: Checker, path: str, body: dict[str, Any]) -> dict[str, JSON] | None:
        """`scope: {repositories: [...], permissions: {name: read|write|admin}}`, both optional
        (absent: the installation's whole access)."""
        where = join(path, "scope")
        scope = ck.mapping(where, body.get("scope", {}), set(), {"repositories", "permissions"})
        if scope is None:
            return None
        out: dict[str, JSON] = {}
        if "repositories" in scope:
            repos = [
                ck.string(p, v, GITHUB_REPO)
                for p, v in ck.items(join(where, "repositories"), scope["repositories"])
            ]
            if len(repos) > GITHUB_MAX_REPOSITORIES:
                ck.fail(join(where, "repositories"), f"at most {GITHUB_MAX_REPOSITORIES}")
            out["repositories"] = [r for r in repos if r]
        if "permissions" in scope:
            out["permissions"] = _github_permissions(
                ck, join(where, "permissions"), scope["permissions"]
            )
        return {"scope": out}


def _github_permissions(ck: Checker, path: str, value: Any) -> dict[str, JSON]:
    perms: dict[str, JSON] = {}
    if not isinstance(value, dict):
        ck.fail(path, "must be a mapping of permission name to read, write or admin")
        return perms
    for name, level in value.items():
        if not isinstance(name, str) or not GITHUB_PERMISSION.fullmatch(name):
            ck.fail(path, f"{name!r} is not a permission name")
        elif level not in GITHUB_LEVELS:
            ck.fail(join(path, name), "must be read, write or admin")
        else:
            perms[name] = level
    return perms


# --- reading -----------------------------------------------------------------------------------


def read_providers(ck: Checker, value: Any) -> dict[str, ProviderSpec]:
    """The `providers:` section: named providers, each with a known `type:`."""
    return ck.named("providers", value, lambda p, n, b: _provider(ck, p, n, b))


def _provider(ck: Checker, path: str, name: str, body: Any) -> ProviderSpec | None:
    if not NAME.fullmatch(name):
        ck.fail(path, f"provider name must match {NAME.pattern}")
    if not isinstance(body, dict):
        ck.fail(path, "must be a mapping")
        return None
    kind = body.get("type")
    spec = TYPES.get(kind) if isinstance(kind, str) else None
    if spec is None:
        ck.fail(join(path, "type"), f"must be one of {', '.join(sorted(TYPES))}")
        return None
    body = {k: v for k, v in body.items() if k != "type"}
    if ck.mapping(path, body, set(spec.required), set(spec.optional)) is None:
        return None
    return spec.read(ck, path, name, body)


def check_services(
    ck: Checker,
    *,
    services: dict[str, Service],
    providers: Mapping[str, ProviderSpec],
    capabilities: Mapping[str, Capability],
    agents: Mapping[str, Agent],
    groups: Mapping[str, Group],
) -> dict[str, Service]:
    """`services` with each `auth: {provider: ...}` read by its provider's type and checked
    against the capabilities of the service and the proxy grants for it."""
    out = dict(services)
    for name, service in services.items():
        auth = service.auth
        if not isinstance(auth, ProviderAuth):
            continue
        path = f"services.{name}.auth"
        spec = providers.get(auth.provider)
        if spec is None:
            ck.fail(join(path, "provider"), f"no provider {auth.provider!r} in providers:")
            continue
        body = dict(auth.settings)
        if ck.mapping(path, body, set(), set(spec.scope_keys)) is None:
            continue
        scope = spec.read_scope(ck, path, body)
        if scope is None:
            continue
        _check_braces(ck, path, scope)
        _check_placeholders(
            ck, path, name, scope, capabilities=capabilities, agents=agents, groups=groups
        )
        out[name] = replace(service, auth=replace(auth, settings=scope))
    return out


def _check_placeholders(
    ck: Checker,
    path: str,
    service: str,
    scope: JSON,
    *,
    capabilities: Mapping[str, Capability],
    agents: Mapping[str, Agent],
    groups: Mapping[str, Group],
) -> None:
    named = list(placeholders(scope, path))
    if not named:
        return
    for where, param in named:
        for cap in capabilities.values():
            p = cap.param(param) if cap.service == service else None
            if cap.service == service and (p is None or (not p.required and p.default is None)):
                ck.fail(
                    where,
                    f"names parameter {param!r}, which capability {cap.name} does not always"
                    " have (it must be required or have a default)",
                )
    grants = [(f"agents.{a.name}.proxy", a.proxy) for a in agents.values()]
    grants += [(f"groups.{g.name}.proxy", g.proxy) for g in groups.values()]
    for where, proxy in grants:
        if any(g.service == service for g in proxy):
            ck.fail(
                where,
                f"service {service!r} has a credential scoped by capability parameters; "
                "it cannot be proxied (a proxied request has no parameters)",
            )


def dev_only(providers: Mapping[str, ProviderSpec]) -> list[str]:
    """The providers `turret serve` refuses without `--dev` (type `env`)."""
    return sorted(name for name, spec in providers.items() if spec.dev_only)


def dev_only_issues(providers: Mapping[str, ProviderSpec]) -> list[ConfigIssue]:
    """What `turret serve` says when refusing a development-only provider without `--dev`
    (and `turret check-config` warns)."""
    return [
        ConfigIssue(
            f"providers.{name}.type",
            None,
            f"type {providers[name].type} is for development and tests only: turret serve "
            "refuses it unless --dev is given (use LoadCredential= and a credential instead)",
        )
        for name in dev_only(providers)
    ]
