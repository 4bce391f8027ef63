"""Reading `providers:` and `auth: {provider: ...}`: every bad config refused with its key path;
placeholders checked against the service's capabilities and refused for proxied services."""

from __future__ import annotations

import pytest

from turret.authkinds import ProviderAuth, credential_uses
from turret.config import load_config
from turret.config.providers import GithubAppSpec, fill, placeholders
from turret.errors import ConfigError, UnprocessableEntity
from turret.model import JSON

TOKEN = "a" * 64
PROVIDER = """  gh-app:
    type: github_app
    app_id: 1234
    installation_id: 4242
    private_key: github-app-key
"""
SCOPE = """{provider: gh-app, scope: {repositories: ["{repo}"], permissions: {issues: write}}}"""
CAPABILITY = """  gh.close:
    service: gh
    description: Close an issue
    params:
      repo: {type: string, pattern: "^[a-z0-9-]+$"}
      number: {type: integer, minimum: 1}
    request: {method: PATCH, path: "/repos/octo/{repo}/issues/{number}", json: {state: closed}}
"""


def config(
    provider: str = PROVIDER, auth: str = SCOPE, capability: str = CAPABILITY, agent: str = ""
) -> str:
    return f"""providers:
{provider}services:
  gh:
    url: https://api.github.com
    auth: {auth}
capabilities:
{capability}agents:
  bot:
    token_sha256: {TOKEN}
    capabilities: ["gh.*"]
{agent}"""


def issues(text: str) -> dict[str, str]:
    with pytest.raises(ConfigError) as caught:
        load_config(text)
    return {i.path: i.message for i in caught.value.issues}


def test_provider_config_github_app_loads() -> None:
    loaded = load_config(config())
    spec = loaded.providers["gh-app"]
    assert isinstance(spec, GithubAppSpec)
    assert (spec.issuer, spec.installation_id, spec.api_url) == (
        "1234",
        4242,
        "https://api.github.com",
    )
    auth = loaded.services["gh"].auth
    assert isinstance(auth, ProviderAuth)
    assert auth.settings == {
        "scope": {"repositories": ["{repo}"], "permissions": {"issues": "write"}}
    }
    assert credential_uses(loaded)["github-app-key"] == "value"


@pytest.mark.parametrize(
    ("provider", "where", "says"),
    [
        (PROVIDER.replace("github_app", "gitlab_app"), "providers.gh-app.type", "one of"),
        (PROVIDER.replace("    app_id: 1234\n", ""), "providers.gh-app", "exactly one of"),
        (PROVIDER + "    client_id: Iv1.abc\n", "providers.gh-app", "exactly one of"),
        (
            PROVIDER.replace("app_id: 1234", "client_id: 'x y'"),
            "providers.gh-app.client_id",
            "must match",
        ),
        (PROVIDER.replace("app_id: 1234", "app_id: -1"), "providers.gh-app.app_id", "integer"),
        (
            PROVIDER.replace("4242", "'4242; x'"),
            "providers.gh-app.installation_id",
            "integer",
        ),
        (
            PROVIDER.replace("github-app-key", "../key"),
            "providers.gh-app.private_key",
            "must match",
        ),
        (PROVIDER + "    api_url: ftp://x\n", "providers.gh-app.api_url", ""),
        (PROVIDER + "    secret: x\n", "providers.gh-app.secret", "unknown key"),
        (
            PROVIDER.replace("    private_key: github-app-key\n", ""),
            "providers.gh-app",
            "private_key",
        ),
        (PROVIDER + "    allow_networks: [not-a-net]\n", "providers.gh-app.allow_networks[0]", ""),
        ("  Bad_Name: {type: env, variable: X}\n", "providers.Bad_Name", "must match"),
    ],
)
def test_provider_config_bad_provider_is_refused(provider: str, where: str, says: str) -> None:
    found = issues(config(provider))
    assert where in found, found
    assert says in found[where]


@pytest.mark.parametrize(
    ("auth", "where", "says"),
    [
        ("{provider: nobody}", "services.gh.auth.provider", "no provider"),
        ("{provider: gh-app, scpe: {}}", "services.gh.auth.scpe", "unknown key"),
        (
            "{provider: gh-app, scope: {permissions: {issues: owner}}}",
            "services.gh.auth.scope.permissions.issues",
            "read, write or admin",
        ),
        (
            "{provider: gh-app, scope: {permissions: [issues]}}",
            "services.gh.auth.scope.permissions",
            "mapping",
        ),
        (
            "{provider: gh-app, scope: {repositories: ['a b']}}",
            "services.gh.auth.scope.repositories[0]",
            "must match",
        ),
        (
            "{provider: gh-app, scope: {repositories: ['{Repo}']}}",
            "services.gh.auth.scope.repositories[0]",
            "must match",
        ),
        (
            "{provider: gh-app, scope: {repositories: ['{owner}']}}",
            "services.gh.auth.scope.repositories[0]",
            "capability gh.close",
        ),
        (
            "{provider: gh-app, scope: {organization: x}}",
            "services.gh.auth.scope.organization",
            "unknown key",
        ),
        ("{provider: gh-app, bearer: x}", "services.gh.auth.bearer", "unknown key"),
    ],
)
def test_provider_config_bad_service_scope_is_refused(auth: str, where: str, says: str) -> None:
    found = issues(config(auth=auth))
    assert where in found, found
    assert says in found[where]


def test_provider_config_too_many_repositories() -> None:
    names = ", ".join(f"r{i}" for i in range(501))
    found = issues(config(auth=f"{{provider: gh-app, scope: {{repositories: [{names}]}}}}"))
    assert "at most 500" in found["services.gh.auth.scope.repositories"]


def test_provider_config_placeholder_of_an_optional_parameter_is_refused() -> None:
    optional = CAPABILITY.replace(
        'repo: {type: string, pattern: "^[a-z0-9-]+$"}',
        'repo: {type: string, required: false}',
    )
    found = issues(config(capability=optional))
    assert "required or have a default" in found["services.gh.auth.scope.repositories[0]"]


@pytest.mark.parametrize(
    "grant",
    [
        "    proxy: [{service: gh, methods: [GET], paths: ['/**']}]\n",
        "groups:\n  ops:\n    agents: [bot]\n"
        "    proxy: [{service: gh, methods: [GET], paths: ['/x']}]\n",
    ],
)
def test_provider_config_a_parameter_scoped_service_cannot_be_proxied(grant: str) -> None:
    found = issues(config(agent=grant))
    assert any("cannot be proxied" in m for m in found.values()), found


def test_provider_config_a_fixed_scope_may_be_proxied() -> None:
    fixed = "{provider: gh-app, scope: {repositories: [tools]}}"
    grant = "    proxy: [{service: gh, methods: [GET], paths: ['/**']}]\n"
    assert load_config(config(auth=fixed, agent=grant)).services["gh"]


def test_provider_config_placeholders_fill_from_params() -> None:
    template: JSON = {
        "repositories": ["{repo}", "x-{repo}-{n}"],
        "permissions": {"issues": "write"},
    }
    assert sorted(p for _, p in placeholders(template)) == ["n", "repo", "repo"]
    filled = fill(template, {"repo": "alpha", "n": 3})
    assert filled == {"repositories": ["alpha", "x-alpha-3"], "permissions": {"issues": "write"}}
    assert fill(["{n}"], {"n": 3}) == [3]  # a whole placeholder keeps the value's type
    with pytest.raises(UnprocessableEntity):
        fill(template, {"repo": "alpha"})
