"""Credential providers: where every credential a request carries upstream comes from.

A provider hands out an `Injection` for one use (`Scope`): static providers the same one every
time (`turret.providers.static`), dynamic ones a value they obtained (`turret.providers.login`,
qBittorrent's session cookie; later GitHub App tokens, Vault/OpenBao leases, STS). Every value a
provider hands out that is valid now is in `guarded()`, so the echo and exfiltration guards
search for it. `turret.upstream.send` is the only caller of `injection`.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from turret.authkinds import Injection
from turret.echo import Redactor

if TYPE_CHECKING:  # only types here: the protocol module itself needs no HTTP client
    import aiohttp

    from turret.connector import SessionPool
    from turret.records import RequestAudit

# Fingerprints are keyed per process: one tells values apart within a run of Turret, and cannot
# be tested against a guessed value (a plain hash could be).
_FINGERPRINT_KEY = os.urandom(32)


def digest(*values: str) -> bytes:
    """An HMAC-SHA256 of `values` under the per-process key: compares values without holding
    them, and cannot be checked against a guess outside this process."""
    message = "\0".join(values).encode("utf-8", "surrogateescape")
    return hmac.new(_FINGERPRINT_KEY, message, hashlib.sha256).digest()


def fingerprint(*values: str) -> str:
    """A short id of `values`: the first 8 hex digits of their `digest`."""
    return digest(*values).hex()[:8]


@dataclass(frozen=True)
class Scope:
    """One use of a credential: the service, the capability (None for the proxy) and its
    parameters, which a dynamic provider may narrow the credential to; and `via`, the client
    session (the service's address-policy session) the request goes out on, through which a
    provider that must fetch its credential from the service itself (a login) does so."""

    service: str
    capability: str | None = None
    params: Mapping[str, object] = field(default_factory=dict)
    via: aiohttp.ClientSession | None = field(default=None, compare=False, repr=False)
    # For a provider that mints (`turret.providers.minting`): the sessions it reaches its own
    # source through (each under that source's address policy), the request's audit records
    # (an issuance is recorded with the request id and agent) and how long the request may
    # spend obtaining its credential.
    pool: SessionPool | None = field(default=None, compare=False, repr=False)
    audit: RequestAudit | None = field(default=None, compare=False, repr=False)
    timeout: float = field(default=10.0, compare=False)


class CredentialProvider(Protocol):
    """Where one service's credential comes from. Never log or repr a value it hands out."""

    @property
    def name(self) -> str:
        """The service's name."""

    @property
    def loaded_at(self) -> float:
        """The wall-clock time the current value was obtained."""

    @property
    def fingerprint(self) -> str:
        """A short, non-reversible id of the current value (`fingerprint`)."""

    async def injection(self, scope: Scope) -> Injection:
        """What to add to a request for `scope`; a `RequestError` if there is none to give."""

    async def renew(self, scope: Scope, stale: Injection, status: int) -> Injection | None:
        """A fresh injection when the upstream answered `status` to `stale` because it expired,
        or None: the answer stands (`upstream.send` then retries once with the fresh one)."""

    def guarded(self) -> list[str]:
        """Every value this provider has handed out that is valid now."""

    def response_guard(self, injection: Injection) -> Redactor | None:
        """A redactor for the values of `injection` the runtime's redactor may not know (they
        were obtained after it was built), or None if it knows them all."""

    async def revoke(self) -> None:
        """Make the values handed out invalid, where the source allows it (optional)."""

    async def rotate(self) -> None:
        """Obtain a new value now (optional)."""

    def live_guard(self) -> Redactor | None:
        """A redactor of the values handed out since the runtime was built that may still be
        valid (minted ones), for the exfiltration guard; None if there are none."""


class ProviderBase:
    """The optional parts of `CredentialProvider`, as no-ops: a provider that cannot renew,
    revoke or rotate, and whose values are all known when the runtime is built."""

    async def renew(self, scope: Scope, stale: Injection, status: int) -> Injection | None:
        """No renewal: the upstream's answer stands."""
        return None

    def response_guard(self, injection: Injection) -> Redactor | None:
        """None: `guarded()` was complete when the runtime's redactor was built."""
        return None

    async def revoke(self) -> None:
        """Nothing to revoke (a static credential is revoked at its source)."""

    async def rotate(self) -> None:
        """Nothing to rotate (a static credential changes with a reload)."""

    def live_guard(self) -> Redactor | None:
        """None: every value is in the runtime's redactor."""
        return None
