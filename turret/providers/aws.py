"""AWS as minting providers: `aws_sts` (temporary keys from STS AssumeRole, narrowed per call by
a session policy; every request to the service is signed with them, SigV4) and `aws_secrets`
(a Secrets Manager secret string, re-read every `refresh` seconds, its `CreatedDate` reported as
`created_at`, the key's age). The source keys are credentials; each call to STS or Secrets
Manager goes through the address policy of the provider's endpoint.

STS sessions cannot be revoked one by one: on killswitch the cache is emptied (nothing more is
signed with them) and they lapse at their expiry, `duration` (900 s by default) at most.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

from turret.authkinds import Injection, Secrets
from turret.config.cloud import MAX_POLICY_CHARS, AwsSecretsSpec, AwsStsSpec
from turret.config.providers import ProviderSpec
from turret.model import JSON, Service
from turret.providers import CredentialProvider, digest
from turret.providers.aws_api import AwsKeys, Endpoint, assume_role, get_secret_value, sign
from turret.providers.minting import Hooks, Minted, MintFailed, MintingProvider, MintSettings


class _AwsProvider(MintingProvider):
    """The source keys and endpoint both AWS providers use."""

    spec: AwsStsSpec | AwsSecretsSpec
    service_name: str = ""

    def _setup(self, spec: AwsStsSpec | AwsSecretsSpec, secrets: Secrets) -> None:
        self.spec = spec
        self._source = AwsKeys(
            secrets[spec.access_key_id].reveal(), secrets[spec.secret_access_key]
        )
        self._source_digest = digest(self._source.access_key_id, *self._source.secrets())

    @property
    def identity(self) -> tuple[object, ...]:
        """The endpoint, role and source keys too: a change mints anew."""
        return (*super().identity, self.spec, self._source_digest)

    def _endpoint(self, deadline: float) -> Endpoint:
        timeout = min(self.remaining(deadline), self.spec.timeout)
        url = self.spec.endpoint or Endpoint.default(self.service_name, self.spec.region).url
        return Endpoint(url, self.spec.region, timeout)


class AwsStsProvider(_AwsProvider):
    """One service's requests, signed with keys of an assumed role, one session per scope."""

    kind = "aws_sts"
    service_name = "sts"

    def __init__(
        self, service: Service, spec: AwsStsSpec, secrets: Secrets, hooks: Hooks | None = None
    ) -> None:
        super().__init__(
            service.name, spec.name, dict(getattr(service.auth, "settings", {})), hooks=hooks
        )
        self._setup(spec, secrets)

    async def mint(self, scope: Mapping[str, JSON], deadline: float) -> Minted:
        """AssumeRole with the scope's session policy; a signer for the scope's service."""
        assert isinstance(self.spec, AwsStsSpec)  # noqa: S101 - set in __init__
        policy = scope.get("session_policy")
        text = None if policy is None else json.dumps(policy, separators=(",", ":"))
        if text is not None and len(text) > MAX_POLICY_CHARS:
            raise MintFailed(f"session policy longer than {MAX_POLICY_CHARS} characters")
        signing = scope.get("signing")
        if not isinstance(signing, dict):
            raise MintFailed("scope has no signing")
        keys = await assume_role(
            self.sessions.session_for(self.spec.address_policy),
            self._endpoint(deadline),
            self._source,
            role_arn=self.spec.role_arn,
            session_name=self.spec.session_name,
            duration=self.spec.duration,
            policy=text,
        )
        signer = _Signer(keys, str(signing["service"]), str(signing["region"]))
        expires = keys.expires_at if keys.expires_at is not None else self.hooks.wall()
        return Minted(Injection(sign=signer), expires, secrets=tuple(keys.secrets()))


@dataclass(frozen=True, repr=False)
class _Signer:
    """The injection's `sign(method, url, headers, body)`: SigV4 under the session's keys."""

    keys: AwsKeys
    service: str
    region: str

    def __repr__(self) -> str:
        return f"Signer(SigV4, {self.service}, {self.region})"

    def __call__(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes
    ) -> dict[str, str]:
        return sign(
            self.keys, self.service, self.region, method=method, url=url, headers=headers, body=body
        )


class AwsSecretsProvider(_AwsProvider):
    """One service's credential: a Secrets Manager secret string (or one key of it)."""

    kind = "aws_secrets"
    service_name = "secretsmanager"

    def __init__(
        self, service: Service, spec: AwsSecretsSpec, secrets: Secrets, hooks: Hooks | None = None
    ) -> None:
        scope = dict(getattr(service.auth, "settings", {}))
        refresh = float(scope.get("refresh", 300))
        # Cached for `refresh` seconds; its value guarded for as long again after that.
        settings = MintSettings(refresh_before=refresh)
        super().__init__(service.name, spec.name, scope, settings=settings, hooks=hooks)
        self._setup(spec, secrets)
        self.created_at: float | None = None  # the version's CreatedDate

    def carry_over(self, previous: MintingProvider) -> None:
        """Also keep the key's age."""
        super().carry_over(previous)
        if isinstance(previous, AwsSecretsProvider) and previous.identity == self.identity:
            self.created_at = previous.created_at

    async def mint(self, scope: Mapping[str, JSON], deadline: float) -> Minted:
        """GetSecretValue; the string, or the `json_key` of the JSON object it holds."""
        stage = scope.get("version_stage")
        got = await get_secret_value(
            self.sessions.session_for(self.spec.address_policy),
            self._endpoint(deadline),
            self._source,
            secret_id=str(scope["secret_id"]),
            version_stage=str(stage) if stage is not None else None,
        )
        value = got.value.reveal()
        key = scope.get("json_key")
        if key is not None:
            value = _json_key(value, str(key))
        self.created_at = got.created_at
        header, prefix = str(scope["header"]), str(scope["prefix"])
        ends = self.hooks.wall() + 2 * float(str(scope["refresh"]))
        return Minted(Injection({header: prefix + value}), ends, secrets=(value,))


def _json_key(text: str, key: str) -> str:
    try:
        doc = json.loads(text)
    except ValueError:
        raise MintFailed("secret string is not JSON (json_key is set)") from None
    value = doc.get(key) if isinstance(doc, dict) else None
    if not isinstance(value, str) or not value:
        raise MintFailed(f"secret's JSON has no string {key!r}")
    return value


def sts_factory(
    service: Service, spec: ProviderSpec, secrets: Secrets, hooks: Hooks | None
) -> CredentialProvider:
    """The `build.FACTORIES` entry for `aws_sts`."""
    assert isinstance(spec, AwsStsSpec)  # noqa: S101 - FACTORIES is keyed by the spec's type
    return AwsStsProvider(service, spec, secrets, hooks)


def secrets_factory(
    service: Service, spec: ProviderSpec, secrets: Secrets, hooks: Hooks | None
) -> CredentialProvider:
    """The `build.FACTORIES` entry for `aws_secrets`."""
    assert isinstance(spec, AwsSecretsSpec)  # noqa: S101 - FACTORIES is keyed by the spec's type
    return AwsSecretsProvider(service, spec, secrets, hooks)
