"""`credentials:`, `credentials_defaults:` and `check:` as the config reader takes them."""

from __future__ import annotations

import pytest

from turret.config import load_config
from turret.credmodel import DAY, HealthCheck
from turret.errors import ConfigError

BASE = """services:
  gitea:
    kind: gitea
    url: http://127.0.0.1:3000
    auth: {bearer: gitea-token}
  notify:
    kind: ntfy
    url: http://127.0.0.1:3001
    auth: {bearer: ntfy-token}
  plain:
    url: http://127.0.0.1:3002
    auth: {bearer: api-key}
agents:
  bot: {token_credential: bot-token, proxy: []}
audit: {params_key: params-key}
"""


def issues(text: str) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as info:
        load_config(text)
    return [(i.path, i.message) for i in info.value.issues]


def test_credpolicy_defaults_apply_to_every_credential_used() -> None:
    config = load_config(
        BASE + "credentials_defaults: {max_age: 180d, owner: ops}\n"
        "credentials:\n  gitea-token: {max_age: 90d, warn_before: 7d, rotate_hint: Gitea UI}\n"
    )
    policy = config.credential_policy
    assert set(policy) == {"gitea-token", "ntfy-token", "api-key", "bot-token", "params-key"}
    assert policy["gitea-token"].max_age == 90 * DAY
    assert policy["gitea-token"].warn_before == 7 * DAY
    assert policy["gitea-token"].owner == "ops"  # inherited from the defaults
    assert policy["gitea-token"].rotate_hint == "Gitea UI"
    assert policy["bot-token"].max_age == 180 * DAY
    assert policy["bot-token"].warn_before == 14 * DAY
    assert not policy["bot-token"].enforce_max_age


def test_credpolicy_without_section_has_no_limits() -> None:
    policy = load_config(BASE).credential_policy
    assert all(p.max_age is None for p in policy.values())


@pytest.mark.parametrize(
    ("extra", "path", "message"),
    [
        ("credentials: {gitea-tokn: {max_age: 90d}}", "credentials.gitea-tokn", "no service"),
        ("credentials: {'bad/name': {}}", "credentials.bad/name", "must match"),
        ("credentials: {gitea-token: {max_age: 90}}", "credentials.gitea-token.max_age", "s, m"),
        ("credentials: {gitea-token: {max_age: 90 days}}", "credentials.gitea-token.max_age",
         "duration"),
        ("credentials: {gitea-token: {max_age: 0d}}", "credentials.gitea-token.max_age", "dur"),
        ("credentials: {gitea-token: {max_age: -3d}}", "credentials.gitea-token.max_age", "dur"),
        ("credentials: {gitea-token: {max_age: 99999d}}", "credentials.gitea-token.max_age",
         "at most"),
        ("credentials: {gitea-token: {max_age: 1w}}", "credentials.gitea-token.max_age", "dur"),
        ("credentials: {gitea-token: {warn_before: 2y}}", "credentials.gitea-token.warn_before",
         "duration"),
        ("credentials: {gitea-token: {max_age: 7d, warn_before: 14d}}",
         "credentials.gitea-token.warn_before", "shorter"),
        ("credentials: {gitea-token: {max_age: 10d}}",  # the default warn_before is 14d
         "credentials.gitea-token.max_age", "warn_before (14d) must be shorter"),
        ("credentials_defaults: {warn_before: 30d}\ncredentials: {gitea-token: {max_age: 20d}}",
         "credentials.gitea-token.max_age", "warn_before (30d)"),
        ("credentials: {gitea-token: {enforce_max_age: true}}",
         "credentials.gitea-token.enforce_max_age", "needs a max_age"),
        ("credentials: {gitea-token: {max_age: 9d, enforce_max_age: yes please}}",
         "credentials.gitea-token.enforce_max_age", "true or false"),
        ("credentials: {bot-token: {max_age: 9d, enforce_max_age: true}}",
         "credentials.bot-token.enforce_max_age", "a service uses"),
        ("credentials: {gitea-token: {owner: ''}}", "credentials.gitea-token.owner", "non-empty"),
        ("credentials: {gitea-token: {rotate_hint: \"a\\nb\"}}",
         "credentials.gitea-token.rotate_hint", "printable"),
        ("credentials: {gitea-token: {maxage: 9d}}", "credentials.gitea-token.maxage", "unknown"),
        ("credentials: [gitea-token]", "credentials", "mapping"),
        ("credentials_defaults: {max_age: soon}", "credentials_defaults.max_age", "duration"),
        ("credentials_defaults: {owner: x, colour: red}", "credentials_defaults.colour",
         "unknown"),
    ],
)  # fmt: skip
def test_credpolicy_refuses_with_key_path(extra: str, path: str, message: str) -> None:
    found = issues(BASE + extra + "\n")
    assert any(p == path and message in m for p, m in found), found


def test_credpolicy_error_does_not_quote_a_pasted_value() -> None:
    # A value pasted where a name belongs is refused by name pattern, and so never quoted back.
    found = issues(BASE + "credentials: {'CANARY secret value': {}}\n")
    assert all("CANARY secret value" not in m for _, m in found)


def test_check_defaults_by_kind() -> None:
    services = load_config(BASE).services
    assert services["gitea"].check == HealthCheck("GET", "/api/v1/user", 200)
    assert services["notify"].check is None  # ntfy: none
    assert services["plain"].check is None  # no kind: none unless configured


def test_check_configured_and_disabled() -> None:
    text = BASE.replace(
        "auth: {bearer: api-key}",
        "auth: {bearer: api-key}\n    check: {method: HEAD, path: /ok, expect_status: 204}",
    ).replace("auth: {bearer: gitea-token}", "auth: {bearer: gitea-token}\n    check: false")
    services = load_config(text).services
    assert services["plain"].check == HealthCheck("HEAD", "/ok", 204)
    assert services["gitea"].check is None


@pytest.mark.parametrize("path", ["/api/", "/", "/api/v1/"])
def test_check_path_may_end_in_a_slash(path: str) -> None:
    # Home Assistant's default check is `GET /api/`: an operator can write it by hand too.
    check = f"auth: {{bearer: api-key}}\n    check: {{path: {path}}}"
    text = BASE.replace("auth: {bearer: api-key}", check)
    assert load_config(text).services["plain"].check == HealthCheck("GET", path, 200)


@pytest.mark.parametrize(
    ("check", "path", "message"),
    [
        ("{path: api/v1/user}", "services.plain.check.path", "must match"),
        ("{path: '/a/../b'}", "services.plain.check.path", ""),
        ("{path: '/a//'}", "services.plain.check.path", ""),
        ("{path: '/a/../'}", "services.plain.check.path", ""),
        ("{path: '/a?x=1'}", "services.plain.check.path", "must match"),
        ("{path: /x, method: FETCH}", "services.plain.check.method", "one of"),
        ("{path: /x, expect_status: 99}", "services.plain.check.expect_status", "from 100"),
        ("{path: /x, expect_status: '200'}", "services.plain.check.expect_status", "integer"),
        ("{method: GET}", "services.plain.check", "missing required key 'path'"),
        ("{path: /x, body: y}", "services.plain.check.body", "unknown"),
        ("true", "services.plain.check", "mapping"),
    ],
)
def test_check_refuses_with_key_path(check: str, path: str, message: str) -> None:
    text = BASE.replace("auth: {bearer: api-key}", f"auth: {{bearer: api-key}}\n    check: {check}")
    found = issues(text)
    assert any(p == path and message in m for p, m in found), found
