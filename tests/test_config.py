"""Configuration loading: the documented shape works; every bad config is refused, located."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from turret.auth import new_token
from turret.authkinds import (
    BasicAuth,
    BearerAuth,
    CredentialRef,
    HeaderAuth,
    QueryAuth,
    credential_uses,
)
from turret.config import load_config
from turret.errors import ConfigError

BAD = sorted((Path(__file__).parent / "data" / "bad_config").glob("*.yaml"))

ISSUE_EXAMPLE = """
listen:
  - "127.0.0.1:8421"
  - "unix:/run/turret/agents.sock"
credentials_dir: null
services:
  gitea:
    url: https://git.example.org
    auth:
      bearer: gitea-token
    timeout: 10
    max_request_bytes: 1048576
    max_response_bytes: 4194304
  basic:
    url: http://10.0.0.2:8080/sub/
    auth: {basic: {username: bot, password: {credential: gitea-password}}}
  ntfy:
    url: https://ntfy.example.org
    auth: {header: {name: X-Api-Key, value: ntfy-key}}
  q:
    url: https://api.example.org
    auth: {query: {name: api_key, value: some-credential}}
agents:
  opencode:
    token_sha256: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
    proxy:
      - service: gitea
        methods: [GET, POST]
        paths: ["/api/v1/repos/me/*", "/api/v1/user", "/api/v1/repos/me/*/issues/**"]
  ops/backup:
    token_credential: backup-agent-token
"""


def test_load_config_reads_the_documented_shape() -> None:
    config = load_config(ISSUE_EXAMPLE)
    assert config.listen == ("127.0.0.1:8421", "unix:/run/turret/agents.sock")
    gitea = config.services["gitea"]
    assert gitea.url == "https://git.example.org"
    assert gitea.auth == BearerAuth("gitea-token")
    assert (gitea.timeout, gitea.max_request_bytes) == (10.0, 1048576)
    assert config.services["basic"].url == "http://10.0.0.2:8080/sub"
    assert config.services["basic"].auth == BasicAuth("bot", CredentialRef("gitea-password"))
    assert config.services["ntfy"].auth == HeaderAuth("X-Api-Key", "ntfy-key")
    assert config.services["q"].auth == QueryAuth("api_key", "some-credential")
    grant = config.agents["opencode"].proxy[0]
    assert grant.methods == {"GET", "POST"}
    assert [p.pattern for p in grant.paths][1] == "/api/v1/user"
    assert config.agents["ops/backup"].token_credential == "backup-agent-token"


def test_load_config_lists_credential_uses() -> None:
    assert credential_uses(load_config(ISSUE_EXAMPLE)) == {
        "gitea-token": "header",
        "gitea-password": "value",
        "ntfy-key": "header",
        "some-credential": "value",
        "backup-agent-token": "value",
    }


def test_load_config_defaults() -> None:
    config = load_config("services:\n  s:\n    url: https://x.example\n    auth: {bearer: t}\n")
    svc = config.services["s"]
    assert (svc.timeout, svc.max_request_bytes, svc.max_response_bytes) == (10.0, 1 << 20, 4 << 20)
    assert config.agents == {} and config.listen == ()


def test_load_config_empty_file_is_an_empty_config() -> None:
    assert load_config("").services == {}


@pytest.mark.parametrize("path", BAD, ids=[p.stem for p in BAD])
def test_load_config_rejects_bad_config(path: Path) -> None:
    text = path.read_text()
    expected = text.splitlines()[0].removeprefix("# expect: ")
    with pytest.raises(ConfigError) as info:
        load_config(text)
    assert expected in str(info.value), str(info.value)


def test_load_config_reports_every_error_at_once() -> None:
    text = """
services:
  a:
    url: ftp://x
    auth: {bearer: t}
    extra: 1
agents:
  b:
    token_sha256: nothex
"""
    with pytest.raises(ConfigError) as info:
        load_config(text)
    messages = [str(i) for i in info.value.issues]
    assert len(messages) == 3, messages
    assert any("services.a.extra" in m for m in messages)
    assert any("services.a.url" in m for m in messages)
    assert any("agents.b.token_sha256" in m for m in messages)


def test_readme_configuration_example_loads() -> None:
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    start = readme.index("\n## Configuration")
    section = readme[start : readme.index("\n## ", start + 1)]
    example = re.findall(r"```yaml\n(.*?)```", section, re.DOTALL)[0]
    config = load_config(example.replace("9f86d081884c7d65...", "ab" * 32))
    assert set(config.services) == {"gitea"} and set(config.agents) == {"opencode"}


def test_load_config_does_not_quote_a_raw_token_pasted_as_token_sha256() -> None:
    token = new_token()
    with pytest.raises(ConfigError) as caught:
        load_config(f"agents:\n  a:\n    token_sha256: {token}\n")
    message = str(caught.value)
    assert "agents.a.token_sha256" in message and "must match" in message
    assert token not in message and token[len("turret_") :] not in message


@pytest.mark.parametrize("body", ["{services: null}", "{nope: x}", "{bearer: t, nope: 1}", "{}"])
def test_config_unknown_auth_key_is_a_config_error_not_a_crash(body: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(f"services:\n  x:\n    url: http://127.0.0.1:1\n    auth: {body}\n")
    assert any(issue.path.startswith("services.x.auth") for issue in caught.value.issues)
