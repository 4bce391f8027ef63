"""`type: env`: a credential from Turret's own environment, for development and tests only.

The value is read once, when the runtime is built, and then handed out like a static
credential (`StaticProvider`): in the header the service's `auth:` names (default
`Authorization`, with the prefix `Bearer `). `turret serve` refuses a config that uses it unless
`--dev` is given (`turret.config.providers.dev_only`): an environment is inherited by every child
process and shown by `/proc/PID/environ` to the same user, so it is no place for a credential
in production; systemd's `LoadCredential=` is.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from turret.authkinds import Injection, Secrets
from turret.config.providers import EnvSpec, ProviderSpec
from turret.errors import CredentialError
from turret.model import Service
from turret.providers import CredentialProvider
from turret.providers.minting import Hooks
from turret.providers.static import StaticProvider


class EnvProvider(StaticProvider):
    """A `StaticProvider` whose value came from the environment: the value alone is guarded
    too (a loaded credential is guarded as loaded; this one is not among them)."""

    def __init__(self, name: str, injection: Injection, value: str) -> None:
        super().__init__(name, injection)
        self._value = value

    def guarded(self) -> list[str]:
        """The header as sent, and the variable's value alone."""
        return [*super().guarded(), self._value]


def env_value(spec: EnvSpec, environ: Mapping[str, str] = os.environ) -> str:
    """The value in `spec.variable`; `CredentialError` naming the variable (never its value)
    if it is unset, empty or unsendable in a header."""
    value = environ.get(spec.variable, "")
    problem = None
    if not value:
        problem = "is not set or empty"
    elif any(c in value for c in "\r\n\0"):
        problem = "contains CR, LF or NUL, which cannot be sent in a header"
    if problem:
        raise CredentialError(
            [f"provider {spec.name!r}: environment variable {spec.variable} {problem}"]
        )
    return value


def factory(
    service: Service, spec: ProviderSpec, secrets: Secrets, hooks: Hooks | None
) -> CredentialProvider:
    """The `env` provider of `service` (`turret.providers.build.FACTORIES`)."""
    if not isinstance(spec, EnvSpec):
        raise TypeError("FACTORIES is keyed by the spec's type")
    value = env_value(spec)
    settings = getattr(service.auth, "settings", {})
    header = str(settings.get("header", "Authorization"))
    injection = Injection({header: str(settings.get("prefix", "Bearer ")) + value})
    return EnvProvider(service.name, injection, value)
