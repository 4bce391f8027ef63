"""`type: env`: a credential from Turret's environment, for development only: injected like a
static credential, refused by `turret serve` without `--dev`, warned about by check-config."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest

from tests.conftest import Upstream
from tests.gateway import Canaries, build_gateway
from turret.auth import token_sha256
from turret.cli import main
from turret.config import load_config
from turret.errors import ConfigError, CredentialError
from turret.providers.build import build_runtime
from turret.server import ServeOptions, load

VARIABLE = "TURRET_TEST_DEV_TOKEN"


def env_config(url: str, token: str, auth: str = "{provider: dev}") -> str:
    return f"""
providers:
  dev: {{type: env, variable: {VARIABLE}}}
services:
  api:
    url: {url}
    auth: {auth}
agents:
  bot:
    token_sha256: {token_sha256(token)}
    proxy: [{{service: api, methods: [GET], paths: ["/reflect", "/echo/**"]}}]
"""


@pytest.fixture
def dev_value(monkeypatch: pytest.MonkeyPatch, leak_check: Canaries) -> str:
    value = f"CANARY-env-{secrets.token_hex(12)}"
    monkeypatch.setenv(VARIABLE, value)
    leak_check.watch([value])
    return value


@pytest.mark.parametrize(
    "case",
    [
        ("{provider: dev}", "Authorization", "Bearer "),
        ("{provider: dev, header: X-Api-Key, prefix: ''}", "X-Api-Key", ""),
        ("{provider: dev, header: X-Token, prefix: 'token '}", "X-Token", "token "),
    ],
)
async def test_env_provider_injects_the_variable(
    upstream: Upstream,
    leak_check: Canaries,
    dev_value: str,
    *,
    tmp_path: Path,
    creds_dir: Path,
    case: tuple[str, str, str],
) -> None:
    auth, header, prefix = case
    token = leak_check.mint()
    built = await build_gateway(
        env_config(upstream.url, token, auth),
        creds=leak_check,
        audit_path=tmp_path / "audit.jsonl",
        credentials_dir=creds_dir,
    )
    resp = await built.client.get(
        "/v1/proxy/api/echo/x", headers={"Authorization": f"Bearer {token}"}
    )
    assert resp.status == 200
    assert upstream.received[-1].headers[header] == prefix + dev_value
    assert dev_value.encode() not in await resp.read()  # the echo guard knows it
    sent = await built.client.get(
        "/v1/proxy/api/reflect",
        params={"x": dev_value},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert sent.status == 403  # and so does the exfiltration guard


@pytest.mark.parametrize("value", ["", "a\r\nInjected: yes"])
def test_env_provider_unusable_variable_stops_start_naming_it(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv(VARIABLE, value)
    with pytest.raises(CredentialError) as caught:
        build_runtime(load_config(env_config("http://127.0.0.1:9", "t")))
    assert VARIABLE in str(caught.value)
    assert "Injected" not in str(caught.value)


def test_env_provider_unset_variable_stops_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(VARIABLE, raising=False)
    with pytest.raises(CredentialError, match=f"{VARIABLE} is not set"):
        build_runtime(load_config(env_config("http://127.0.0.1:9", "t")))


def test_env_provider_serve_refuses_it_without_dev(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(VARIABLE, "dev-value")
    path = tmp_path / "turret.yaml"
    path.write_text(env_config("http://127.0.0.1:9", "t"))
    with pytest.raises(ConfigError) as caught:
        load(ServeOptions(str(path)))
    (issue,) = caught.value.issues
    assert issue.path == "providers.dev.type"
    assert "refuses it unless --dev" in issue.message
    assert load(ServeOptions(str(path), dev=True)).providers["api"] is not None


def test_env_provider_serve_cli_says_why_it_refuses(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(VARIABLE, "dev-value")
    path = tmp_path / "turret.yaml"
    path.write_text(env_config("http://127.0.0.1:9", "t"))
    audit = tmp_path / "audit.jsonl"
    assert main(["serve", "--config", str(path), "--audit-file", str(audit)]) == 78
    assert "--dev" in capsys.readouterr().err


def test_env_provider_check_config_warns(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "turret.yaml"
    path.write_text(env_config("http://127.0.0.1:9", "t"))
    assert main(["check-config", str(path)]) == 0
    err = capsys.readouterr().err
    assert "warning" in err
    assert "providers.dev.type" in err


@pytest.mark.parametrize(
    ("body", "where"),
    [
        ("{type: env}", "providers.dev"),
        ("{type: env, variable: 'not a name'}", "providers.dev.variable"),
        ("{type: env, variable: X, extra: 1}", "providers.dev.extra"),
    ],
)
def test_env_provider_bad_config_is_refused(body: str, where: str) -> None:
    text = env_config("http://127.0.0.1:9", "t").replace(
        f"{{type: env, variable: {VARIABLE}}}", body
    )
    with pytest.raises(ConfigError) as caught:
        load_config(text)
    assert where in [i.path for i in caught.value.issues]
