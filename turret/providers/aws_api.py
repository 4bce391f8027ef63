"""AWS on the wire: SigV4 signing with botocore's signer, STS `AssumeRole` (Query API, XML
answer) and Secrets Manager `GetSecretValue` (JSON 1.1 protocol), over aiohttp.

botocore is used only for what it does best and without I/O: the signature. The calls are two
small HTTP requests each provider makes through its address-policy session (`fetch.call`).
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlencode

import aiohttp
from botocore.auth import S3SigV4Auth, SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from yarl import URL

from turret.providers.fetch import call, json_object, text_field, time_field
from turret.providers.minting import MintFailed
from turret.secret import Secret

STS_VERSION = "2011-06-15"
MIN_DURATION = 900  # STS refuses a shorter session
# Headers that carry the signature itself: Turret's to set, never the caller's (a caller's
# `X-Amz-Content-SHA256: UNSIGNED-PAYLOAD` would otherwise leave the body out of the signature).
SIGNATURE_HEADERS = frozenset(
    {"authorization", "x-amz-date", "x-amz-security-token", "x-amz-content-sha256"}
)
_STS_NS = "{https://sts.amazonaws.com/doc/2011-06-15/}"
# S3 signs its path as sent (other services encode it twice) and says in X-Amz-Content-SHA256
# what the signature covers; botocore would leave the body out over https: Turret never does.
_S3 = Config(s3={"payload_signing_enabled": True})


@dataclass(frozen=True)
class AwsKeys:
    """An access key pair, with a session token and expiry when temporary. Never log it."""

    access_key_id: str
    secret_access_key: Secret
    session_token: Secret | None = None
    expires_at: float | None = None

    def __repr__(self) -> str:
        return f"AwsKeys(temporary={self.session_token is not None}, expires_at={self.expires_at})"

    def secrets(self) -> list[str]:
        """The values that must never be seen outside Turret (the key id is an identifier)."""
        token = [self.session_token.reveal()] if self.session_token else []
        return [self.secret_access_key.reveal(), *token]


def sign(
    keys: AwsKeys,
    service: str,
    region: str,
    *,
    method: str,
    url: str,
    headers: Mapping[str, str],
    body: bytes,
) -> dict[str, str]:
    """`headers` plus a SigV4 signature of the whole request (method, URL, signed headers and
    the body's hash) under `keys`, for `service` in `region`. Sign the final request: any
    change after this invalidates it."""
    kept: dict[str, str] = {}
    for name, value in headers.items():
        if name.lower() not in SIGNATURE_HEADERS:
            # SigV4 joins repeated headers with commas; so does this.
            kept[name] = f"{kept[name]},{value}" if name in kept else value
    request = AWSRequest(method=method, url=url, data=body, headers=kept)
    token = keys.session_token.reveal() if keys.session_token else None
    credentials = Credentials(keys.access_key_id, keys.secret_access_key.reveal(), token)
    if service == "s3":
        request.context["client_config"] = _S3
        S3SigV4Auth(credentials, service, region).add_auth(request)
    else:
        SigV4Auth(credentials, service, region).add_auth(request)
    return dict(request.headers.items())


@dataclass(frozen=True)
class Endpoint:
    """An AWS service endpoint: its URL, the region signatures are scoped to, a time limit."""

    url: str
    region: str
    timeout: float = 5.0

    @classmethod
    def default(cls, service: str, region: str) -> Endpoint:
        """The service's regional endpoint (`sts`, `secretsmanager`)."""
        return cls(f"https://{service}.{region}.amazonaws.com", region)

    def root(self) -> URL:
        """The URL the Query and JSON protocols post to."""
        return URL(self.url.rstrip("/") + "/")


def assume_role_body(role_arn: str, session_name: str, duration: int, policy: str | None) -> bytes:
    """The form of an `AssumeRole` call (Query API)."""
    form = {
        "Action": "AssumeRole",
        "Version": STS_VERSION,
        "RoleArn": role_arn,
        "RoleSessionName": session_name,
        "DurationSeconds": str(duration),
    }
    if policy is not None:
        form["Policy"] = policy
    return urlencode(form).encode()


async def assume_role(
    session: aiohttp.ClientSession,
    sts: Endpoint,
    source: AwsKeys,
    *,
    role_arn: str,
    session_name: str,
    duration: int,
    policy: str | None,
) -> AwsKeys:
    """Temporary keys for `role_arn`, narrowed by the session `policy`; or `MintFailed`."""
    url = sts.root()
    body = assume_role_body(role_arn, session_name, duration, policy)
    headers = {"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"}
    signed = sign(
        source, "sts", sts.region, method="POST", url=str(url), headers=headers, body=body
    )
    status, data = await call(
        session, "POST", url, headers=signed, body=body, within=sts.timeout, what="sts AssumeRole"
    )
    root = _xml(data, "sts AssumeRole")
    if status != 200:
        # STS writes ErrorResponse/Error/Code in its namespace; other Query APIs (and moto)
        # nest it in Errors/ and without one: the first Code element, wherever it is.
        code = next((e.text for e in root.iter() if e.tag.rpartition("}")[2] == "Code"), None)
        raise MintFailed(f"sts AssumeRole: HTTP {status} {_safe_code(code)}")
    creds = root.find(f"{_STS_NS}AssumeRoleResult/{_STS_NS}Credentials")
    if creds is None:
        raise MintFailed("sts AssumeRole: no Credentials in the answer")
    fields = {child.tag.removeprefix(_STS_NS): (child.text or "") for child in creds}
    what = "sts AssumeRole"
    return AwsKeys(
        text_field(fields, "AccessKeyId", what),
        Secret(text_field(fields, "SecretAccessKey", what)),
        Secret(text_field(fields, "SessionToken", what)),
        time_field(fields, "Expiration", what),
    )


@dataclass(frozen=True)
class SecretValue:
    """A Secrets Manager secret's current string, its version and when that version was made."""

    value: Secret
    version_id: str
    created_at: float

    def __repr__(self) -> str:
        return f"SecretValue(version_id={self.version_id!r}, created_at={self.created_at})"


async def get_secret_value(
    session: aiohttp.ClientSession,
    endpoint: Endpoint,
    keys: AwsKeys,
    *,
    secret_id: str,
    version_stage: str | None,
) -> SecretValue:
    """`GetSecretValue` for `secret_id` (at `version_stage`, default AWSCURRENT)."""
    what = "secretsmanager GetSecretValue"
    url = endpoint.root()
    request: dict[str, str] = {"SecretId": secret_id}
    if version_stage is not None:
        request["VersionStage"] = version_stage
    body = json.dumps(request).encode()
    headers = {
        "Content-Type": "application/x-amz-json-1.1",
        "X-Amz-Target": "secretsmanager.GetSecretValue",
    }
    signed = sign(
        keys,
        "secretsmanager",
        endpoint.region,
        method="POST",
        url=str(url),
        headers=headers,
        body=body,
    )
    status, data = await call(
        session, "POST", url, headers=signed, body=body, within=endpoint.timeout, what=what
    )
    answer = json_object(data, what)
    if status != 200:
        kind = answer.get("__type")
        code = _safe_code(kind if isinstance(kind, str) else None)
        raise MintFailed(f"{what}: HTTP {status} {code}")
    created = answer.get("CreatedDate")
    if not isinstance(created, int | float) or isinstance(created, bool):
        raise MintFailed(f"{what}: 'CreatedDate' missing or not a number")
    return SecretValue(
        Secret(text_field(answer, "SecretString", what)),
        text_field(answer, "VersionId", what),
        float(created),
    )


def _xml(data: bytes, what: str) -> ET.Element:
    """Parse an AWS XML answer; a DTD or an entity declaration (never in one) is refused before
    the parser sees it, so no entity can expand."""
    if b"<!" in data:
        raise MintFailed(f"{what}: answer holds a DTD or declaration")
    try:
        return ET.fromstring(data)  # noqa: S314 - declarations refused above
    except ET.ParseError:
        raise MintFailed(f"{what}: answer is not XML") from None


def _safe_code(code: str | None) -> str:
    """An AWS error code, if it looks like one (a word such as AccessDenied); nothing else of an
    error answer is kept."""
    code = (code or "").rpartition("#")[2]
    return code if code.isascii() and code.isalnum() and len(code) <= 64 else "(no error code)"
