"""The `aws_sts` and `aws_secrets` providers through a whole gateway, against moto in server
mode with IAM authentication on: moto recomputes each signature Turret makes with the session
keys it minted, and refuses a wrong one."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import overload

import aiohttp
import pytest

from tests.conftest import Upstream, assert_error
from tests.gateway import Canaries
from tests.pipeline.conftest import Recording
from tests.providers.cloudgw import CloudGateway, agent_block, cloud_gateway
from tests.providers.minters import FakeTime
from tests.providers.motoserver import ACCOUNT, REGION, ROLE_ARN, MotoServer
from turret.config import load_config
from turret.errors import ConfigError
from turret.providers.aws import AwsSecretsProvider
from turret.providers.minting import revoke_all

READ_SECRET_POLICY = (
    '{Version: "2012-10-17", Statement: [{Effect: Allow, Action: "secretsmanager:DescribeSecret",'
    f' Resource: "arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:{{name}}*"}}]}}'
)
WHOAMI_POLICY = (
    '{Version: "2012-10-17", Statement: [{Effect: Allow, Action: "sts:GetCallerIdentity",'
    ' Resource: "*"}]}'
)
WHOAMI = b"Action=GetCallerIdentity&Version=2011-06-15"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


class MotoIssued(Sequence[str]):
    """Every session secret moto has issued, read when the leak check runs."""

    def __init__(self, moto: MotoServer) -> None:
        self.moto = moto

    def _values(self) -> list[str]:
        roles = self.moto.assumed_roles()
        return [v for r in roles for v in (r["secret_access_key"], r["session_token"])]

    def __len__(self) -> int:
        return len(self._values())

    @overload
    def __getitem__(self, index: int) -> str: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[str]: ...
    def __getitem__(self, index: int | slice) -> str | Sequence[str]:
        return self._values()[index]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values())


@dataclass
class Env:
    moto: MotoServer
    upstream: Upstream
    creds: Canaries
    tmp_path: Path
    clock: FakeTime

    def config(self, endpoint: str | None) -> str:
        url = endpoint or self.moto.url
        return f"""
providers:
  aws-main:
    type: aws_sts
    role_arn: {ROLE_ARN}
    region: {REGION}
    access_key_id: aws-key-id
    secret_access_key: aws-secret-key
    endpoint: {url}
    duration: 900
  sm:
    type: aws_secrets
    region: {REGION}
    access_key_id: aws-admin-key-id
    secret_access_key: aws-admin-secret
    endpoint: {url}
services:
  sts:
    url: {self.moto.url}
    auth: {{provider: aws-main, signing: {{service: sts}}, session_policy: {WHOAMI_POLICY}}}
  secrets:
    url: {self.moto.url}
    auth:
      provider: aws-main
      signing: {{service: secretsmanager}}
      session_policy: {READ_SECRET_POLICY}
  s3:
    url: {self.moto.url}
    auth: {{provider: aws-main, signing: {{service: s3}}}}
  app:
    url: {self.upstream.url}
    auth: {{provider: sm, secret_id: turret/app-token, refresh: 300}}
  appjson:
    url: {self.upstream.url}
    auth:
      {{provider: sm, secret_id: turret/app-json, json_key: token, header: X-Api-Key, prefix: ""}}
capabilities:
  secrets.describe:
    service: secrets
    description: Describe one secret (not its value)
    params:
      name: {{type: string, pattern: "[a-z0-9-]+"}}
    request:
      method: POST
      path: /
      headers: {{X-Amz-Target: secretsmanager.DescribeSecret}}
      json: {{SecretId: "{{name}}"}}
    result: [Name]
"""

    async def gateway(
        self, endpoint: str | None = None, source_secret: str | None = None
    ) -> CloudGateway:
        token = self.creds.mint()
        grants = """\
    proxy:
      - {service: sts, methods: [POST], paths: ["/"]}
      - {service: s3, methods: [GET, PUT], paths: ["/turret-bucket/**"]}
      - {service: app, methods: [GET], paths: ["/api/**"]}
      - {service: appjson, methods: [GET], paths: ["/api/**"]}
    capabilities: [secrets.describe]
"""
        text = self.config(endpoint) + agent_block(token, grants)
        admin, source = self.moto.admin, self.moto.source
        assert admin is not None and source is not None
        sources = {
            "aws-key-id": source.access_key_id,
            "aws-secret-key": source_secret or source.secret_access_key,
            "aws-admin-key-id": admin.access_key_id,
            "aws-admin-secret": admin.secret_access_key,
        }
        self.creds.watch(MotoIssued(self.moto))
        return await cloud_gateway(
            text,
            creds=self.creds,
            tmp_path=self.tmp_path,
            sources=sources,
            token=token,
            time=self.clock,
        )

    def sessions(self) -> int:
        return len(self.moto.assumed_roles())


@pytest.fixture
def env(moto: MotoServer, upstream: Upstream, leak_check: Canaries, tmp_path: Path) -> Env:
    # moto dates its sessions by the real clock: Turret's fake one starts there too.
    return Env(moto, upstream, leak_check, tmp_path, FakeTime(wall=time.time()))


async def whoami(gw: CloudGateway) -> aiohttp.ClientResponse:
    return await gw.client.post("/v1/proxy/sts/", data=WHOAMI, headers={**gw.auth(), **FORM})


async def test_aws_sts_signed_request_accepted_by_moto_and_session_cached(env: Env) -> None:
    gw = await env.gateway()
    before = env.sessions()
    for _ in range(3):
        resp = await whoami(gw)
        body = await resp.text()
        assert resp.status == 200, body
        assert "assumed-role/turret-role/turret" in body
    assert env.sessions() == before + 1  # one AssumeRole for three requests
    issued = env.moto.assumed_roles()[-1]
    assert json.loads(issued["policy"])["Statement"][0]["Action"] == "sts:GetCallerIdentity"
    (minted,) = gw.records("credential_minted")
    assert minted["TURRET_PROVIDER"] == "aws-main"
    assert issued["session_token"] not in json.dumps(gw.audit())


async def test_aws_sts_caller_signature_headers_are_replaced(env: Env) -> None:
    gw = await env.gateway()
    forged = {
        "X-Amz-Content-SHA256": "UNSIGNED-PAYLOAD",
        "X-Amz-Security-Token": "forged",
        "X-Amz-Date": "20000101T000000Z",
        "X-Amz-Target": "kept",
    }
    resp = await gw.client.post(
        "/v1/proxy/sts/", data=WHOAMI, headers={**gw.auth(), **FORM, **forged}
    )
    assert resp.status == 200, await resp.text()  # moto checked Turret's signature only


async def test_aws_sts_session_secrets_refused_in_an_agent_request(env: Env) -> None:
    gw = await env.gateway()
    assert (await whoami(gw)).status == 200
    issued = env.moto.assumed_roles()[-1]
    for value in (issued["session_token"], issued["secret_access_key"]):
        resp = await gw.client.post(
            "/v1/proxy/sts/", data=WHOAMI + b"&x=" + value.encode(), headers={**gw.auth(), **FORM}
        )
        await assert_error(resp, 403, "credential_in_request")


async def test_aws_sts_s3_signed_with_payload_hash_and_path_as_sent(env: Env) -> None:
    admin = env.moto.client("s3")
    admin.create_bucket(Bucket="turret-bucket")  # moto is fresh for each test session
    gw = await env.gateway()
    target = "/v1/proxy/s3/turret-bucket/notes/a%20b+c.txt"
    resp = await gw.client.session.put(
        gw.url(target),
        data=b"hello through turret",
        headers={**gw.auth(), "X-Amz-Content-SHA256": "UNSIGNED-PAYLOAD"},
    )
    assert resp.status == 200, await resp.text()
    resp = await gw.client.session.get(gw.url(target), headers=gw.auth())
    assert (resp.status, await resp.read()) == (200, b"hello through turret")
    stored = admin.get_object(Bucket="turret-bucket", Key="notes/a b+c.txt")
    assert stored["Body"].read() == b"hello through turret"


async def test_aws_sts_remints_before_expiry(env: Env) -> None:
    gw = await env.gateway()
    before = env.sessions()
    assert (await whoami(gw)).status == 200
    env.clock.advance(599)  # 900 s sessions, renewed 300 s before they end
    assert (await whoami(gw)).status == 200
    assert env.sessions() == before + 1
    env.clock.advance(2)
    assert (await whoami(gw)).status == 200
    assert env.sessions() == before + 2
    assert len(gw.records("credential_minted")) == 2


async def test_aws_sts_session_policy_narrowed_per_call(env: Env) -> None:
    admin = env.moto.client("secretsmanager")
    names = [f"app-{secrets.token_hex(3)}", f"db-{secrets.token_hex(3)}"]
    for name in names:
        admin.create_secret(Name=name, SecretString=f"CANARY-{name}-value")
    env.creds.watch([f"CANARY-{n}-value" for n in names])
    gw = await env.gateway()
    before = env.sessions()
    for name in [*names, names[0]]:
        resp = await gw.client.post(
            "/v1/capabilities/secrets.describe", json={"name": name}, headers=gw.auth()
        )
        body = await resp.json()
        assert resp.status == 200, body
        assert body["result"] == {"Name": name}
    issued = env.moto.assumed_roles()[before:]
    assert len(issued) == 2  # one session per distinct name; the repeat was cached
    resources = [json.loads(r["policy"])["Statement"][0]["Resource"] for r in issued]
    assert resources == [
        f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:{name}*" for name in names
    ]


async def test_aws_sts_unreachable_retries_three_times_then_503_with_alert(env: Env) -> None:
    gw = await env.gateway(endpoint="http://127.0.0.1:9")
    before = env.sessions()
    await assert_error(await whoami(gw), 503, "credential_unavailable")
    assert env.sessions() == before
    assert len(env.clock.slept) == 3
    (alert,) = gw.records("credential_mint_failed")
    assert alert["PRIORITY"] == "2"
    assert alert["TURRET_PROVIDER"] == "aws-main"
    assert "sts AssumeRole: unreachable" in alert["TURRET_REASON"]


async def test_aws_sts_refused_source_keys_fail_closed(env: Env) -> None:
    gw = await env.gateway(source_secret="CANARY-not-the-key-0123456789")
    await assert_error(await whoami(gw), 503, "credential_unavailable")
    (alert,) = gw.records("credential_mint_failed")
    assert "HTTP 403 SignatureDoesNotMatch" in alert["TURRET_REASON"]


async def test_aws_sts_killswitch_forgets_sessions(env: Env) -> None:
    gw = await env.gateway()
    before = env.sessions()
    assert (await whoami(gw)).status == 200
    await revoke_all({"sts": gw.provider("sts")}, Recording())
    assert gw.provider("sts").state.cache == {}
    assert (await whoami(gw)).status == 200
    assert env.sessions() == before + 2  # nothing signed with the old session again


async def test_aws_secrets_value_sent_refreshed_and_aged(env: Env) -> None:
    admin = env.moto.client("secretsmanager")
    first, second = (
        "CANARY-sm-first-" + secrets.token_hex(6),
        "CANARY-sm-second-" + secrets.token_hex(6),
    )
    env.creds.watch([first, second])
    admin.create_secret(Name="turret/app-token", SecretString=first)
    gw = await env.gateway()
    resp = await gw.client.get("/v1/proxy/app/api/v1/user", headers=gw.auth())
    assert resp.status == 200
    assert first not in await resp.text()
    assert env.upstream.received[-1].headers["Authorization"] == f"Bearer {first}"
    provider = gw.provider("app")
    assert isinstance(provider, AwsSecretsProvider)
    assert provider.created_at is not None
    admin.put_secret_value(SecretId="turret/app-token", SecretString=second)
    env.clock.advance(299)
    await gw.client.get("/v1/proxy/app/api/v1/user", headers=gw.auth())
    assert env.upstream.received[-1].headers["Authorization"] == f"Bearer {first}"
    env.clock.advance(2)
    await gw.client.get("/v1/proxy/app/api/v1/user", headers=gw.auth())
    assert env.upstream.received[-1].headers["Authorization"] == f"Bearer {second}"


async def test_aws_secrets_json_key_and_bad_json_fail_closed(env: Env) -> None:
    admin = env.moto.client("secretsmanager")
    value = "CANARY-sm-json-" + secrets.token_hex(6)
    env.creds.watch([value])
    text = json.dumps({"token": value, "user": "bot"})
    admin.create_secret(Name="turret/app-json", SecretString=text)
    gw = await env.gateway()
    assert (await gw.client.get("/v1/proxy/appjson/api/x", headers=gw.auth())).status == 200
    assert env.upstream.received[-1].headers["X-Api-Key"] == value
    admin.put_secret_value(SecretId="turret/app-json", SecretString="not json")
    env.clock.advance(301)
    resp = await gw.client.get("/v1/proxy/appjson/api/x", headers=gw.auth())
    await assert_error(resp, 503, "credential_unavailable")


SOURCE = "access_key_id: k, secret_access_key: s"
SIGN = ", signing: {service: sts}"


@pytest.mark.parametrize(
    ("provider", "scope", "message"),
    [
        (f"region: us-east-1, role_arn: {ROLE_ARN}, duration: 899", SIGN, "duration"),
        (f"region: us-east-1, role_arn: {ROLE_ARN}, duration: 43201", SIGN, "duration"),
        ("region: us-east-1, role_arn: 'arn:aws:iam::1:user/x'", SIGN, "role_arn"),
        (f"region: mars, role_arn: {ROLE_ARN}", SIGN, "region"),
        (f"region: us-east-1, role_arn: {ROLE_ARN}", "", "signing"),
        (f"region: us-east-1, role_arn: {ROLE_ARN}", SIGN + ", session_policy: [x]", "IAM policy"),
        (
            f"region: us-east-1, role_arn: {ROLE_ARN}",
            SIGN + ", session_policy: {Statement: [{Resource: " + "x" * 2100 + "}]}",
            "longer than 2048",
        ),
        (f"region: us-east-1, role_arn: {ROLE_ARN}, endpoint: 'file:///x'", SIGN, "endpoint"),
    ],
)
def test_aws_sts_config_errors_name_the_key(provider: str, scope: str, message: str) -> None:
    text = f"""
providers:
  a: {{type: aws_sts, {SOURCE}, {provider}}}
services:
  s:
    url: http://aws.example
    auth: {{provider: a{scope}}}
agents: {{}}
"""
    with pytest.raises(ConfigError) as failed:
        load_config(text)
    assert message in str(failed.value)


def test_aws_secrets_config_refuses_a_placeholder_in_secret_id() -> None:
    text = """
providers:
  sm: {type: aws_secrets, region: us-east-1, access_key_id: k, secret_access_key: s}
services:
  s:
    url: http://app.example
    auth: {provider: sm, secret_id: "app/{name}"}
agents: {}
"""
    with pytest.raises(ConfigError, match="secret_id"):
        load_config(text)
