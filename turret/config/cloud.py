"""The `providers:` types `vault`, `aws_sts` and `aws_secrets` (pure: reading and checking).

Each names its source credentials (never values): AppRole `role_id`/`secret_id` or a `token`
for Vault, `access_key_id`/`secret_access_key` for AWS. A source's URL is an outbound
destination like a service's: it goes through its own `allow_networks` address policy.

A service's `auth: {provider: NAME, ...}` adds its scope: for Vault one of `kv: {mount, path,
field, version?}` or `dynamic: {mount, role, field}`; for `aws_secrets` `secret_id` (and
`json_key` when the secret string is a JSON object); both with `header`/`prefix` (default
`Authorization: Bearer `). For `aws_sts`: `signing: {service, region?}` (what requests to the
service are signed for) and an optional `session_policy` (narrowing the role's session; it may
name capability parameters as `{param}`, so each call's keys can do only what that call does).
Vault paths and secret ids take no placeholders: a parameter's value must not choose a path.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, ClassVar, Self

from turret.authkinds import Uses
from turret.config.checker import Checker
from turret.config.limits import read_address_policy
from turret.config.providers import PLACEHOLDER, ProviderSpec, read_injected_header, register
from turret.config.yamlload import join
from turret.model import CREDENTIAL_NAME, JSON
from turret.netpolicy import AddressPolicy

SEGMENT = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"
VAULT_MOUNT = re.compile(SEGMENT)
VAULT_PATH = re.compile(rf"{SEGMENT}(/{SEGMENT}){{0,15}}")
VAULT_NAMESPACE = re.compile(rf"{SEGMENT}(/{SEGMENT}){{0,7}}")
FIELD = re.compile(r"[A-Za-z0-9_.-]{1,128}")
ROLE_ARN = re.compile(r"arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]{1,512}")
REGION = re.compile(r"[a-z]{2}(-[a-z]+)+-\d{1,2}")
AWS_SERVICE = re.compile(r"[a-z][a-z0-9-]{1,62}")
SESSION_NAME = re.compile(r"[\w+=,.@-]{2,64}")
SECRET_ID = re.compile(r"[A-Za-z0-9/_+=.@:-]{1,2048}")
MIN_STS_DURATION, MAX_STS_DURATION = 900, 43200
MAX_POLICY_CHARS = 2048  # STS's limit on a packed session policy's plain text


def _source(ck: Checker, path: str, body: dict[str, Any]) -> tuple[AddressPolicy, float | None]:
    policy = read_address_policy(ck, join(path, "allow_networks"), body.get("allow_networks", []))
    timeout = ck.number(join(path, "timeout"), body.get("timeout", 5), 0.1, 120, integer=False)
    return policy, None if timeout is None else float(timeout)


def _no_placeholder(ck: Checker, path: str, text: str | None) -> str | None:
    if text is not None and PLACEHOLDER.search(text):
        ck.fail(path, "takes no {param} placeholder (a parameter must not choose the path)")
        return None
    return text


@register
@dataclass(frozen=True)
class VaultSpec(ProviderSpec):
    """`type: vault`: HashiCorp Vault or OpenBao, by AppRole or a token."""

    url: str = ""
    namespace: str | None = None
    role_id: str | None = None
    secret_id: str | None = None
    token: str | None = None
    address_policy: AddressPolicy = field(default_factory=AddressPolicy)
    timeout: float = 5.0
    type: ClassVar[str] = "vault"
    required: ClassVar[frozenset[str]] = frozenset({"url"})
    optional: ClassVar[frozenset[str]] = frozenset(
        {"namespace", "role_id", "secret_id", "token", "allow_networks", "timeout"}
    )
    scope_keys: ClassVar[frozenset[str]] = frozenset({"kv", "dynamic", "header", "prefix"})

    @classmethod
    def read(cls, ck: Checker, path: str, name: str, body: dict[str, Any]) -> Self | None:
        approle = "role_id" in body or "secret_id" in body
        if approle == ("token" in body) or (approle and not {"role_id", "secret_id"} <= set(body)):
            ck.fail(path, "needs either role_id and secret_id (AppRole) or token")
            return None
        creds = {
            k: ck.string(join(path, k), body[k], CREDENTIAL_NAME)
            for k in ("role_id", "secret_id", "token")
            if k in body
        }
        url = ck.url(join(path, "url"), body.get("url"))
        namespace = body.get("namespace")
        if namespace is not None:
            namespace = ck.string(join(path, "namespace"), namespace, VAULT_NAMESPACE)
        policy, timeout = _source(ck, path, body)
        if url is None or timeout is None or None in creds.values():
            return None
        return cls(name, url, namespace, address_policy=policy, timeout=timeout, **creds)

    def uses(self) -> Uses:
        names = (self.role_id, self.secret_id, self.token)
        return {n: "value" for n in names if n}

    def read_scope(self, ck: Checker, path: str, body: dict[str, Any]) -> dict[str, JSON] | None:
        """Exactly one of `kv:` and `dynamic:`, and how the value is sent."""
        if ("kv" in body) == ("dynamic" in body):
            ck.fail(path, "needs exactly one of kv and dynamic")
            return None
        injected = read_injected_header(ck, path, body)
        source = _kv(ck, join(path, "kv"), body["kv"]) if "kv" in body else None
        if "dynamic" in body:
            source = _dynamic(ck, join(path, "dynamic"), body["dynamic"])
        if injected is None or source is None:
            return None
        return {**injected, **source}


def _kv(ck: Checker, path: str, value: Any) -> dict[str, JSON] | None:
    m = ck.mapping(path, value, {"mount", "path", "field"}, {"version", "refresh"})
    if m is None:
        return None
    mount = _no_placeholder(
        ck, join(path, "mount"), ck.string(join(path, "mount"), m.get("mount"), VAULT_MOUNT)
    )
    where = _no_placeholder(
        ck, join(path, "path"), ck.string(join(path, "path"), m.get("path"), VAULT_PATH)
    )
    name = ck.string(join(path, "field"), m.get("field"), FIELD)
    version = m.get("version")
    if version is not None:
        version = ck.number(join(path, "version"), version, 1, 2**31, integer=True)
    refresh = ck.number(join(path, "refresh"), m.get("refresh", 300), 10, 86400, integer=True)
    if None in (mount, where, name, refresh) or ("version" in m and version is None):
        return None
    kv: dict[str, JSON] = {"mount": mount, "path": where, "field": name, "refresh": refresh}
    if version is not None:
        kv["version"] = int(version)
    return {"kv": kv}


def _dynamic(ck: Checker, path: str, value: Any) -> dict[str, JSON] | None:
    m = ck.mapping(path, value, {"mount", "role", "field"}, {"increment"})
    if m is None:
        return None
    mount = ck.string(join(path, "mount"), m.get("mount"), VAULT_MOUNT)
    role = ck.string(join(path, "role"), m.get("role"), VAULT_MOUNT)
    name = ck.string(join(path, "field"), m.get("field"), FIELD)
    increment = ck.number(
        join(path, "increment"), m.get("increment", 3600), 60, 2**31, integer=True
    )
    if None in (mount, role, name, increment):
        return None
    return {"dynamic": {"mount": mount, "role": role, "field": name, "increment": increment}}


@dataclass(frozen=True)
class _AwsSpec(ProviderSpec):
    """What both AWS types share: the region, the source keys, an endpoint for tests."""

    region: str = ""
    access_key_id: str = ""
    secret_access_key: str = ""
    endpoint: str | None = None
    address_policy: AddressPolicy = field(default_factory=AddressPolicy)
    timeout: float = 5.0
    shared: ClassVar[frozenset[str]] = frozenset({"region", "access_key_id", "secret_access_key"})
    shared_optional: ClassVar[frozenset[str]] = frozenset({"endpoint", "allow_networks", "timeout"})

    @classmethod
    def read_shared(cls, ck: Checker, path: str, body: dict[str, Any]) -> dict[str, Any] | None:
        """The shared keys as constructor arguments, or None (each problem reported)."""
        region = ck.string(join(path, "region"), body.get("region"), REGION)
        key_id = ck.string(join(path, "access_key_id"), body.get("access_key_id"), CREDENTIAL_NAME)
        secret = ck.string(
            join(path, "secret_access_key"), body.get("secret_access_key"), CREDENTIAL_NAME
        )
        endpoint = (
            ck.url(join(path, "endpoint"), body["endpoint"]) if "endpoint" in body else None
        )
        policy, timeout = _source(ck, path, body)
        if None in (region, key_id, secret, timeout) or ("endpoint" in body and endpoint is None):
            return None
        return {
            "region": region,
            "access_key_id": key_id,
            "secret_access_key": secret,
            "endpoint": endpoint,
            "address_policy": policy,
            "timeout": timeout,
        }

    def uses(self) -> Uses:
        return {self.access_key_id: "value", self.secret_access_key: "value"}


@register
@dataclass(frozen=True)
class AwsStsSpec(_AwsSpec):
    """`type: aws_sts`: temporary keys for `role_arn` from STS AssumeRole; requests to the
    service are signed with them (SigV4)."""

    role_arn: str = ""
    duration: int = MIN_STS_DURATION
    session_name: str = "turret"
    type: ClassVar[str] = "aws_sts"
    required: ClassVar[frozenset[str]] = _AwsSpec.shared | {"role_arn"}
    optional: ClassVar[frozenset[str]] = _AwsSpec.shared_optional | {"duration", "session_name"}
    scope_keys: ClassVar[frozenset[str]] = frozenset({"signing", "session_policy"})

    @classmethod
    def read(cls, ck: Checker, path: str, name: str, body: dict[str, Any]) -> Self | None:
        shared = cls.read_shared(ck, path, body)
        arn = ck.string(join(path, "role_arn"), body.get("role_arn"), ROLE_ARN)
        duration = ck.number(
            join(path, "duration"),
            body.get("duration", MIN_STS_DURATION),
            MIN_STS_DURATION,
            MAX_STS_DURATION,
            integer=True,
        )
        session = ck.string(
            join(path, "session_name"), body.get("session_name", "turret"), SESSION_NAME
        )
        if shared is None or None in (arn, duration, session):
            return None
        return cls(
            name, **shared, role_arn=str(arn), duration=int(duration), session_name=str(session)
        )

    def read_scope(self, ck: Checker, path: str, body: dict[str, Any]) -> dict[str, JSON] | None:
        """`signing: {service, region?}` and an optional `session_policy` (an IAM policy
        document, as a mapping)."""
        where = join(path, "signing")
        m = ck.mapping(where, body.get("signing"), {"service"}, {"region"})
        if m is None:
            return None
        service = ck.string(join(where, "service"), m.get("service"), AWS_SERVICE)
        region = ck.string(join(where, "region"), m.get("region", self.region), REGION)
        scope: dict[str, JSON] = {"signing": {"service": service, "region": region}}
        if "session_policy" in body:
            policy = body["session_policy"]
            if not isinstance(policy, dict) or "Statement" not in policy:
                ck.fail(join(path, "session_policy"), "must be an IAM policy (with Statement)")
                return None
            if len(json.dumps(policy, separators=(",", ":"))) > MAX_POLICY_CHARS:
                ck.fail(join(path, "session_policy"), f"longer than {MAX_POLICY_CHARS} characters")
                return None
            scope["session_policy"] = policy
        return scope if service and region else None


@register
@dataclass(frozen=True)
class AwsSecretsSpec(_AwsSpec):
    """`type: aws_secrets`: a secret string from AWS Secrets Manager, re-read every
    `refresh` seconds, sent as the service's credential."""

    type: ClassVar[str] = "aws_secrets"
    required: ClassVar[frozenset[str]] = _AwsSpec.shared
    optional: ClassVar[frozenset[str]] = _AwsSpec.shared_optional
    scope_keys: ClassVar[frozenset[str]] = frozenset(
        {"secret_id", "version_stage", "json_key", "refresh", "header", "prefix"}
    )

    @classmethod
    def read(cls, ck: Checker, path: str, name: str, body: dict[str, Any]) -> Self | None:
        shared = cls.read_shared(ck, path, body)
        return None if shared is None else cls(name, **shared)

    def read_scope(self, ck: Checker, path: str, body: dict[str, Any]) -> dict[str, JSON] | None:
        """`secret_id` (name or ARN), optional `version_stage`, `json_key`, `refresh`."""
        injected = read_injected_header(ck, path, body)
        secret = ck.string(join(path, "secret_id"), body.get("secret_id"), SECRET_ID)
        secret = _no_placeholder(ck, join(path, "secret_id"), secret)
        refresh = ck.number(
            join(path, "refresh"), body.get("refresh", 300), 10, 86400, integer=True
        )
        scope: dict[str, JSON] = {"secret_id": secret, "refresh": refresh}
        for key in ("version_stage", "json_key"):
            if key in body:
                scope[key] = ck.string(join(path, key), body[key], FIELD)
        if injected is None or None in scope.values():
            return None
        return {**injected, **scope}
