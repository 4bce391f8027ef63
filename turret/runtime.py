"""The running configuration: config, providers and everything derived from them, built once
(by `turret.providers.build.build_runtime`).

A `Runtime` is immutable. Reloading builds a new one and swaps it into the `RuntimeHolder` in one
assignment; a request takes the current one when it starts and uses it to the end, so requests in
flight finish on the configuration they started with.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from turret.auth import TokenIndex
from turret.echo import Redactor
from turret.model import Config
from turret.secret import Secret

if TYPE_CHECKING:
    from turret.providers import CredentialProvider

# Keys the audit trail's parameter hashes when no `audit.params_key` credential is configured:
# hashes then compare within one run of Turret, and cannot be tested against guesses afterwards.
PROCESS_PARAMS_KEY = os.urandom(32)


@dataclass(frozen=True)
class Runtime:
    """Everything a request needs, derived from one config and its credentials."""

    config: Config
    tokens: TokenIndex
    providers: Mapping[str, CredentialProvider]  # by service name
    redactor: Redactor
    params_key: bytes = PROCESS_PARAMS_KEY
    # Minting providers a reload replaced (a changed key, app or scope) or whose service was
    # removed, while credentials they issued may still be valid: the killswitch revokes those.
    retired: tuple[CredentialProvider, ...] = ()
    # The loaded credentials by name, for their keyed fingerprints (`turret.credwatch`) only.
    secrets: Mapping[str, Secret] = field(default_factory=dict, repr=False)
    chain_key: bytes | None = None  # `audit.chain_key`: the audit chain's HMAC key

    def live_guards(self) -> list[Redactor]:
        """The providers' redactors of values minted since this runtime was built."""
        guards = (p.live_guard() for p in self.providers.values())
        return [g for g in guards if g is not None]

    def __repr__(self) -> str:
        return f"Runtime(agents={len(self.config.agents)}, services={len(self.config.services)})"


class RuntimeHolder:
    """The one mutable cell: the runtime new requests start on."""

    def __init__(self, runtime: Runtime) -> None:
        self.current = runtime
