"""Vault / OpenBao as a minting provider (`providers: {NAME: {type: vault, ...}}`).

Turret logs in with AppRole (or uses a configured token) and, per service, either reads a KV v2
secret's field (`kv:`; re-read every `refresh` seconds, its version's `created_time` reported as
`created_at`, the key's age) or asks a secrets engine for a dynamic credential (`dynamic:`; the
lease is renewed before it runs out while Vault allows, then a new one is minted; on killswitch
every lease is revoked with `sys/leases/revoke`, then Turret's own AppRole token). A lease never
outlives the token that created it (Vault revokes a token's leases with it), so its use ends
with the token's. Every call goes through the address policy of the provider's `url`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from turret.authkinds import Injection, Secrets
from turret.config.cloud import VaultSpec
from turret.config.providers import ProviderSpec
from turret.model import JSON, Service
from turret.providers import CredentialProvider, digest
from turret.providers.minting import (
    Hooks,
    Minted,
    MintFailed,
    MintingProvider,
    MintSettings,
    RevokeReport,
    scope_text,
)
from turret.providers.vault_api import (
    VaultServer,
    VaultToken,
    login_approle,
    read_creds,
    read_kv,
    renew_lease,
    revoke_lease,
    revoke_self,
)
from turret.secret import Secret

DYNAMIC_REFRESH_BEFORE = 60.0  # a lease is renewed (or replaced) this long before it ends


class VaultProvider(MintingProvider):
    """One service's credential from Vault: a KV field, or a dynamic lease."""

    kind = "vault"

    def __init__(
        self, service: Service, spec: VaultSpec, secrets: Secrets, hooks: Hooks | None = None
    ) -> None:
        scope: dict[str, JSON] = dict(getattr(service.auth, "settings", {}))
        kv = scope.get("kv")
        # KV: cached for `refresh` seconds, its value guarded for as long again after that
        # (a rotated secret may still be accepted upstream for a while).
        refresh = float(str(kv["refresh"])) if isinstance(kv, dict) else DYNAMIC_REFRESH_BEFORE
        super().__init__(
            service.name,
            spec.name,
            scope,
            settings=MintSettings(refresh_before=refresh),
            hooks=hooks,
        )
        self.spec = spec
        names = [n for n in (spec.role_id, spec.secret_id, spec.token) if n]
        self._creds = {n: secrets[n] for n in names}
        self._creds_digest = digest(*(s.reveal() for s in self._creds.values()))
        self._login: tuple[VaultToken, float] | None = None  # (token, when obtained)
        self._revoked: set[str] = set()  # leases revoked (a renewed one is issued twice)
        self._fixed: set[str] = set()  # leases Vault said are not renewable
        self.created_at: float | None = None  # the KV version's created_time

    @property
    def identity(self) -> tuple[object, ...]:
        """The server, namespace and credentials too: a change mints anew."""
        return (*super().identity, self.spec, self._creds_digest)

    def carry_over(self, previous: MintingProvider) -> None:
        """Also keep the AppRole token, the key's age and what was revoked."""
        super().carry_over(previous)
        if isinstance(previous, VaultProvider) and previous.identity == self.identity:
            self._login, self._revoked = previous._login, previous._revoked
            self._fixed = previous._fixed
            self.created_at = previous.created_at

    async def mint(self, scope: Mapping[str, JSON], deadline: float) -> Minted:
        """The service's value: the KV field, or a renewed or new dynamic lease. After a
        failure the AppRole token is dropped, so a retry logs in anew (the token may be what
        Vault refused: revoked or expired early)."""
        try:
            return await self._mint(scope, deadline)
        except MintFailed:
            self._login = None
            raise

    async def _mint(self, scope: Mapping[str, JSON], deadline: float) -> Minted:
        server = self._server(deadline)
        token, token_ends = await self._token(server)
        header, prefix = str(scope["header"]), str(scope["prefix"])
        now = self.hooks.wall()
        http = self.sessions.session_for(self.spec.address_policy)
        kv = scope.get("kv")
        if isinstance(kv, dict):
            version = kv.get("version")
            spec = (str(kv["mount"]), str(kv["path"]), str(kv["field"]), _int(version))
            got = await read_kv(http, server, token, spec)
            self.created_at = got.created_at
            value = got.value.reveal()
            ends = now + 2 * float(str(kv["refresh"]))
            return Minted(Injection({header: prefix + value}), ends, secrets=(value,))
        dynamic = scope["dynamic"]
        if not isinstance(dynamic, dict):
            raise MintFailed("scope has neither kv nor dynamic")
        renewed = await self._renewed(server, token, scope, int(str(dynamic["increment"])))
        if renewed is not None:
            return replace(renewed[0], expires_at=min(renewed[1], token_ends))
        spec3 = (str(dynamic["mount"]), str(dynamic["role"]), str(dynamic["field"]))
        lease = await read_creds(http, server, token, spec3, now)
        if not lease.renewable:
            self._fixed.add(lease.lease_id)
        value = lease.value.reveal()
        return Minted(
            Injection({header: prefix + value}),
            min(lease.expires_at, token_ends),
            lease_id=lease.lease_id,
            secrets=(value,),
        )

    def revocable(self, minted: Minted) -> bool:
        """A dynamic lease can be revoked; a KV value cannot (it is a static secret)."""
        return bool(minted.lease_id)

    async def revoke_lease(self, minted: Minted) -> None:
        """`sys/leases/revoke` for a dynamic lease (once, however often it was renewed)."""
        lease_id = minted.lease_id
        if not lease_id or lease_id in self._revoked:
            return
        server = self._server(self.hooks.monotonic() + self.spec.timeout)
        token, _ = await self._token(server)
        http = self.sessions.session_for(self.spec.address_policy)
        await revoke_lease(http, server, token, lease_id)
        self._revoked.add(lease_id)

    async def revoke_outstanding(self) -> RevokeReport:
        """Every lease, then Turret's AppRole token (a configured token is the operator's)."""
        report = await super().revoke_outstanding()
        if self._login is None or self.spec.token or self.state.pool is None:
            return report
        token, self._login = self._login[0].token, None
        server = self._server(self.hooks.monotonic() + self.spec.timeout)
        try:
            await revoke_self(self.sessions.session_for(self.spec.address_policy), server, token)
        except MintFailed as exc:
            return RevokeReport(report.revoked, (*report.failures, exc.cause))
        return report

    def _server(self, deadline: float) -> VaultServer:
        return VaultServer(
            self.spec.url, self.spec.namespace, min(self.remaining(deadline), self.spec.timeout)
        )

    async def _token(self, server: VaultServer) -> tuple[Secret, float]:
        """The token to call with and when it ends: the configured one (no known end), or
        the AppRole login's, logging in anew once half its lifetime has passed."""
        if self.spec.token:
            return self._creds[self.spec.token], float("inf")
        now = self.hooks.wall()
        if self._login is not None:
            login, since = self._login
            if now < since + (login.expires_at - since) / 2:
                return login.token, login.expires_at
        assert self.spec.role_id and self.spec.secret_id  # noqa: S101 - the spec's invariant
        http = self.sessions.session_for(self.spec.address_policy)
        role_id, secret_id = self._creds[self.spec.role_id], self._creds[self.spec.secret_id]
        login = await login_approle(http, server, role_id, secret_id, now)
        if login.expires_at <= now:
            raise MintFailed("vault approle login: token without a lifetime")
        self._login = (login, now)
        return login.token, login.expires_at

    async def _renewed(
        self, server: VaultServer, token: Secret, scope: Mapping[str, JSON], increment: int
    ) -> tuple[Minted, float] | None:
        """The cached lease of `scope` renewed, with its new end; None if there is none to
        renew, Vault refused, or it granted too little to be worth keeping."""
        cached = self.state.cache.get(scope_text(dict(scope)))
        lease_id = cached.minted.lease_id if cached is not None else None
        if cached is None or not lease_id or lease_id in self._fixed:
            return None
        now = self.hooks.wall()
        http = self.sessions.session_for(self.spec.address_policy)
        try:
            ends = await renew_lease(
                http, server, token, lease_id=lease_id, increment=increment, now=now
            )
        except MintFailed:
            return None  # a new lease is minted instead
        if ends - now <= 2 * self.settings.refresh_before:
            return None  # at the role's max TTL: the old lease lapses, a new one is minted
        return cached.minted, ends


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def factory(
    service: Service, spec: ProviderSpec, secrets: Secrets, hooks: Hooks | None
) -> CredentialProvider:
    """The `build.FACTORIES` entry for `vault`."""
    assert isinstance(spec, VaultSpec)  # noqa: S101 - FACTORIES is keyed by the spec's type
    return VaultProvider(service, spec, secrets, hooks)
