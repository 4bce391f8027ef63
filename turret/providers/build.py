"""Building a runtime: load the credentials a config references, one provider per service."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping

from turret.auth import TokenIndex
from turret.authkinds import ProviderAuth, Secrets
from turret.config.providers import ProviderSpec
from turret.echo import Redactor
from turret.errors import CredentialError
from turret.model import Config, Service
from turret.providers import CredentialProvider
from turret.providers.aged import unwrapped
from turret.providers.login import LoginProvider
from turret.providers.minting import Hooks, MintingProvider
from turret.providers.static import StaticProvider, credentials_directory, load_credentials
from turret.runtime import PROCESS_PARAMS_KEY, Runtime

# How each `providers:` type becomes a service's provider: (service, its spec, the loaded
# secrets, hooks) -> provider. A type's module adds its entry here, by module and function
# name: a module is imported only when a config uses its type, so a Turret without providers
# never loads PyJWT, cryptography or botocore (start time and idle memory).
Factory = Callable[[Service, ProviderSpec, Secrets, Hooks | None], CredentialProvider]
FACTORIES: dict[str, tuple[str, str]] = {
    "env": ("turret.providers.env", "factory"),
    "github_app": ("turret.providers.github_app", "factory"),
    "vault": ("turret.providers.vault", "factory"),
    "aws_sts": ("turret.providers.aws", "sts_factory"),
    "aws_secrets": ("turret.providers.aws", "secrets_factory"),
}


def factory(provider_type: str) -> Factory:
    """The factory of `provider_type` (a key of `FACTORIES`), its module imported now."""
    module, name = FACTORIES[provider_type]
    made: Factory = getattr(importlib.import_module(module), name)
    return made


def build_runtime(
    config: Config,
    credentials_dir: str | None = None,
    previous: Runtime | None = None,
    *,
    hooks: Hooks | None = None,
) -> Runtime:
    """Load the credentials `config` references and derive the runtime; fail closed.

    `previous` is the runtime this one replaces on reload: its login state and minted
    credentials carry over. `hooks` (clocks, sleep, randomness) go to minting providers."""
    secrets = load_credentials(config, credentials_directory(config, credentials_dir))
    try:
        tokens = TokenIndex(config.agents, secrets)
    except ValueError as exc:
        raise CredentialError([str(exc)]) from None
    providers = providers_for(config, secrets, previous.providers if previous else {}, hooks)
    guarded = [s.reveal() for s in secrets.values()]
    for provider in providers.values():
        guarded.extend(provider.guarded())
    key = secrets[config.params_key].reveal().encode() if config.params_key else PROCESS_PARAMS_KEY
    for agent in config.agents.values():
        _ = agent.proxy_index  # built here, at load, rather than by an agent's first request
    retired = _retired(previous, providers) if previous else ()
    chain_key = secrets[config.chain_key].reveal().encode() if config.chain_key else None
    return Runtime(
        config, tokens, providers, Redactor(guarded), key, retired,
        secrets=secrets, chain_key=chain_key,
    )  # fmt: skip


def _retired(
    previous: Runtime, providers: Mapping[str, CredentialProvider]
) -> tuple[CredentialProvider, ...]:
    """The minting providers of `previous` (and those it had retired) that no new provider
    took over and that issued credentials still valid, for the killswitch to revoke."""
    kept = {id(p.state) for p in providers.values() if isinstance(p, MintingProvider)}
    old = [unwrapped(p) for p in (*previous.providers.values(), *previous.retired)]
    return tuple(
        p
        for p in old
        if isinstance(p, MintingProvider) and id(p.state) not in kept and p.outstanding()
    )


def providers_for(
    config: Config,
    secrets: Secrets,
    previous: Mapping[str, CredentialProvider],
    hooks: Hooks | None = None,
) -> dict[str, CredentialProvider]:
    """One provider per service, from its auth kind and the loaded `secrets`.

    A login provider takes over the login state (session, backoff) of the `previous` runtime's
    provider of the same service: a reload neither logs in again nor forgets a backoff. A
    changed URL or credential is still tried at once (the state is checked against them)."""
    providers: dict[str, CredentialProvider] = {}
    for name, service in config.services.items():
        if isinstance(service.auth, ProviderAuth):
            spec = config.providers[service.auth.provider]
            provider = factory(spec.type)(service, spec, secrets, hooks)
            old = previous.get(name)
            if isinstance(provider, MintingProvider) and isinstance(old, MintingProvider):
                provider.carry_over(old)
            providers[name] = provider
            continue
        injection = service.auth.injection(secrets)
        if injection.login is None:
            providers[name] = StaticProvider(name, injection)
            continue
        old = previous.get(name)
        state = old.state if isinstance(old, LoginProvider) else None
        providers[name] = LoginProvider(service, injection.login, state)
    return providers
