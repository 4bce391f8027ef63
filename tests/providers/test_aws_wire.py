"""The AWS client (`turret.providers.aws_api`) against moto in server mode, with IAM
authentication on: moto recomputes every SigV4 signature and refuses a wrong one."""

from __future__ import annotations

import hashlib
import json
import secrets

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from yarl import URL

from tests.providers.motoserver import REGION, ROLE_ARN, MotoServer
from turret.providers.aws_api import AwsKeys, Endpoint, assume_role, get_secret_value, sign
from turret.providers.fetch import call
from turret.providers.minting import MintFailed
from turret.secret import Secret

POLICY = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "sts:GetCallerIdentity", "Resource": "*"}],
    }
)


def source_keys(moto: MotoServer) -> AwsKeys:
    assert moto.source is not None
    return AwsKeys(moto.source.access_key_id, Secret(moto.source.secret_access_key))


async def _assume(http: aiohttp.ClientSession, moto: MotoServer, name: str) -> AwsKeys:
    return await assume_role(
        http,
        Endpoint(moto.url, REGION),
        source_keys(moto),
        role_arn=ROLE_ARN,
        session_name=name,
        duration=900,
        policy=POLICY,
    )


async def _caller_identity(
    http: aiohttp.ClientSession, moto: MotoServer, keys: AwsKeys, *, tamper: bool = False
) -> tuple[int, bytes]:
    url = moto.url + "/"
    body = b"Action=GetCallerIdentity&Version=2011-06-15"
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    signed = sign(keys, "sts", REGION, method="POST", url=url, headers=headers, body=body)
    sent = body + b"&x=1" if tamper else body
    return await call(http, "POST", URL(url), headers=signed, body=sent, within=5, what="test")


async def test_aws_assume_role_mints_session_keys_moto_issued(
    http: aiohttp.ClientSession, moto: MotoServer
) -> None:
    name = "turret-" + secrets.token_hex(4)
    keys = await _assume(http, moto, name)
    (issued,) = [r for r in moto.assumed_roles() if r["session_name"] == name]
    assert keys.access_key_id == issued["access_key_id"]
    assert keys.secret_access_key.reveal() == issued["secret_access_key"]
    assert keys.session_token is not None
    assert keys.session_token.reveal() == issued["session_token"]
    assert json.loads(issued["policy"]) == json.loads(POLICY)  # the session policy reached STS
    assert keys.expires_at is not None
    assert "AwsKeys(temporary=True" in repr(keys)
    assert keys.secret_access_key.reveal() not in repr(keys)


async def test_aws_signature_with_session_keys_is_accepted(
    http: aiohttp.ClientSession, moto: MotoServer
) -> None:
    keys = await _assume(http, moto, "turret-sign")
    status, body = await _caller_identity(http, moto, keys)
    assert status == 200, body
    assert b"assumed-role/turret-role/turret-sign" in body


async def test_aws_signature_covers_the_body(http: aiohttp.ClientSession, moto: MotoServer) -> None:
    keys = await _assume(http, moto, "turret-tamper")
    status, body = await _caller_identity(http, moto, keys, tamper=True)
    assert status == 403
    assert b"SignatureDoesNotMatch" in body


@pytest.mark.parametrize("service", ["sts", "s3"])
async def test_aws_sign_replaces_caller_signature_headers(service: str) -> None:
    keys = AwsKeys("ASIAEXAMPLE", Secret("sk"), Secret("tok"))
    caller = {
        "X-Amz-Content-SHA256": "UNSIGNED-PAYLOAD",
        "x-amz-security-token": "theirs",
        "X-Amz-Date": "19700101T000000Z",
        "Authorization": "AWS4-HMAC-SHA256 Credential=theirs",
        "X-Custom": "kept",
    }
    out = sign(keys, service, REGION, method="PUT", url="http://h/k", headers=caller, body=b"b")
    lowered = {k.lower(): v for k, v in out.items()}
    # S3 states the body's hash (never UNSIGNED-PAYLOAD); other services sign it implicitly.
    body_hash = hashlib.sha256(b"b").hexdigest()
    assert lowered.get("x-amz-content-sha256") == (body_hash if service == "s3" else None)
    assert lowered["x-amz-security-token"] == "tok"
    assert lowered["x-amz-date"] != "19700101T000000Z"
    assert "Credential=ASIAEXAMPLE/" in lowered["authorization"]
    assert "x-custom" in lowered["authorization"].split("SignedHeaders=")[1]


async def test_aws_wrong_source_key_is_a_source_failure_with_the_code_only(
    http: aiohttp.ClientSession, moto: MotoServer
) -> None:
    assert moto.source is not None
    wrong = AwsKeys(moto.source.access_key_id, Secret("CANARY-wrong-secret"))
    with pytest.raises(MintFailed) as failed:
        await assume_role(
            http,
            Endpoint(moto.url, REGION),
            wrong,
            role_arn=ROLE_ARN,
            session_name="nope",
            duration=900,
            policy=None,
        )
    assert failed.value.cause == "sts AssumeRole: HTTP 403 SignatureDoesNotMatch"


async def test_aws_get_secret_value_reads_string_version_and_date(
    http: aiohttp.ClientSession, moto: MotoServer
) -> None:
    name = "turret/" + secrets.token_hex(4)
    value = "CANARY-sm-" + secrets.token_hex(8)
    created = moto.client("secretsmanager").create_secret(Name=name, SecretString=value)
    keys = await _assume(http, moto, "turret-sm")
    got = await get_secret_value(
        http, Endpoint(moto.url, REGION), keys, secret_id=name, version_stage=None
    )
    assert got.value.reveal() == value
    assert got.version_id == created["VersionId"]
    assert got.created_at > 0
    assert value not in repr(got)
    with pytest.raises(MintFailed) as failed:
        await get_secret_value(
            http, Endpoint(moto.url, REGION), keys, secret_id=name + "x", version_stage=None
        )
    assert failed.value.cause.endswith("HTTP 404 ResourceNotFoundException")


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (
            b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY a "aaaa">]><r>&a;</r>',
            "DTD or declaration",
        ),
        (b"<r><!-- hidden --></r>", "DTD or declaration"),
        (b"not xml at all", "not XML"),
        (b"<AssumeRoleResponse/>", "no Credentials"),
        (
            b'<AssumeRoleResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">'
            b"<AssumeRoleResult><Credentials><AccessKeyId>ASIA</AccessKeyId>"
            b"<SecretAccessKey>s</SecretAccessKey><SessionToken>t</SessionToken>"
            b"<Expiration>tomorrow</Expiration></Credentials></AssumeRoleResult>"
            b"</AssumeRoleResponse>",
            "Expiration is not a timestamp",
        ),
        (
            b'<AssumeRoleResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">'
            b"<AssumeRoleResult><Credentials><AccessKeyId>ASIA</AccessKeyId>"
            b"<SessionToken>t</SessionToken><Expiration>2030-01-01T00:00:00Z</Expiration>"
            b"</Credentials></AssumeRoleResult></AssumeRoleResponse>",
            "'SecretAccessKey' missing",
        ),
    ],
)
async def test_aws_malformed_sts_answers_fail_closed(
    http: aiohttp.ClientSession, body: bytes, reason: str
) -> None:
    async def answer(_: web.Request) -> web.Response:
        return web.Response(body=body, content_type="text/xml")

    app = web.Application()
    app.router.add_post("/", answer)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        with pytest.raises(MintFailed, match=reason):
            await assume_role(
                http,
                Endpoint(str(server.make_url("")), REGION),
                AwsKeys("AKIA", Secret("s")),
                role_arn=ROLE_ARN,
                session_name="x",
                duration=900,
                policy=None,
            )
    finally:
        await server.close()
