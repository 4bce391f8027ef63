"""The running configuration: config, credentials and everything derived from them, built once.

A `Runtime` is immutable. Reloading builds a new one and swaps it into the `RuntimeHolder` in one
assignment; a request takes the current one when it starts and uses it to the end, so requests in
flight finish on the configuration they started with.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from turret.auth import TokenIndex
from turret.authkinds import Injection
from turret.credentials import credentials_directory, load_credentials
from turret.echo import Redactor
from turret.errors import CredentialError
from turret.model import Config

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
    injections = {name: svc.auth.injection(secrets) for name, svc in config.services.items()}
    guarded = [s.reveal() for s in secrets.values()]
    for inj in injections.values():
        guarded.extend(inj.values())
    key = secrets[config.params_key].reveal().encode() if config.params_key else PROCESS_PARAMS_KEY
    for agent in config.agents.values():
        _ = agent.proxy_index  # built here, at load, rather than by an agent's first request
    return Runtime(config, tokens, injections, Redactor(guarded), key)


class RuntimeHolder:
    """The one mutable cell: the runtime new requests start on."""

    def __init__(self, runtime: Runtime) -> None:
        self.current = runtime
