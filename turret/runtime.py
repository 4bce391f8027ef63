"""The running configuration: config, credentials and everything derived from them, built once.

A `Runtime` is immutable. Reloading builds a new one and swaps it into the `RuntimeHolder` in one
assignment; a request takes the current one when it starts and uses it to the end, so requests in
flight finish on the configuration they started with.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import quote

from turret.auth import TokenIndex
from turret.credentials import Secret, credentials_directory, load_credentials
from turret.echo import Redactor
from turret.errors import CredentialError
from turret.model import (
    BasicAuth,
    BearerAuth,
    Config,
    CredentialRef,
    HeaderAuth,
    LoginAuth,
    QueryAuth,
    Service,
    Value,
)


@dataclass(frozen=True)
class Injection:
    """What Turret adds to every request to one service. Holds secret values: never log it."""

    headers: dict[str, str] = field(default_factory=dict)
    query: tuple[str, str] | None = None  # (name, already URL-encoded value)
    login: tuple[str, str] | None = None  # (username, password) for a WebUI login

    def __repr__(self) -> str:
        return (
            f"Injection(headers={sorted(self.headers)}, query={bool(self.query)},"
            f" login={bool(self.login)})"
        )


# Keys the audit trail's parameter hashes when no `audit.params_key` credential is configured:
# hashes then compare within one run of Turret, and cannot be tested against guesses afterwards.
PROCESS_PARAMS_KEY = os.urandom(32)


@dataclass(frozen=True)
class Runtime:
    """Everything a request needs, derived from one config and its credentials."""

    config: Config
    tokens: TokenIndex
    injections: Mapping[str, Injection]
    redactor: Redactor
    params_key: bytes = PROCESS_PARAMS_KEY

    def __repr__(self) -> str:
        return f"Runtime(agents={len(self.config.agents)}, services={len(self.config.services)})"


def build_runtime(config: Config, credentials_dir: str | None = None) -> Runtime:
    """Load the credentials `config` references and derive the runtime; fail closed."""
    secrets = load_credentials(config, credentials_directory(config, credentials_dir))
    try:
        tokens = TokenIndex(config.agents, secrets)
    except ValueError as exc:
        raise CredentialError([str(exc)]) from None
    injections = {name: _injection(svc, secrets) for name, svc in config.services.items()}
    guarded = [s.reveal() for s in secrets.values()]
    for inj in injections.values():
        guarded.extend(inj.headers.values())
        guarded.extend(inj.login[1:] if inj.login else ())
    key = secrets[config.params_key].reveal().encode() if config.params_key else PROCESS_PARAMS_KEY
    for agent in config.agents.values():
        _ = agent.proxy_index  # built here, at load, rather than by an agent's first request
    return Runtime(config, tokens, injections, Redactor(guarded), key)


def _injection(service: Service, secrets: Mapping[str, Secret]) -> Injection:
    auth = service.auth
    if isinstance(auth, BearerAuth):
        return Injection({"Authorization": "Bearer " + secrets[auth.credential].reveal()})
    if isinstance(auth, HeaderAuth):
        return Injection({auth.name: auth.prefix + secrets[auth.credential].reveal()})
    if isinstance(auth, QueryAuth):
        return Injection(query=(auth.name, quote(secrets[auth.credential].reveal(), safe="")))
    if isinstance(auth, LoginAuth):
        return Injection(login=(_value(auth.username, secrets), _value(auth.password, secrets)))
    pair = f"{_value(auth.username, secrets)}:{_value(auth.password, secrets)}"
    assert isinstance(auth, BasicAuth)  # noqa: S101 - exhaustive over Auth
    return Injection({"Authorization": "Basic " + base64.b64encode(pair.encode()).decode()})


def _value(value: Value, secrets: Mapping[str, Secret]) -> str:
    return secrets[value.name].reveal() if isinstance(value, CredentialRef) else value


class RuntimeHolder:
    """The one mutable cell: the runtime new requests start on."""

    def __init__(self, runtime: Runtime) -> None:
        self.current = runtime
