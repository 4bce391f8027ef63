"""The NixOS module knows the credentials `providers:` entries name (a GitHub App's private
key): one nobody provides fails the evaluation, naming the option."""

from __future__ import annotations

from tests.nix.nixtools import ModuleEval
from tests.nix.test_nix_module import SETTINGS, failed_assertions, host

PROVIDER = """providers.gh-app = {
      type = "github_app"; app_id = 1234; installation_id = 4242; private_key = "gh-app-key";
    };"""


def test_module_finds_a_providers_private_key(evaluate: ModuleEval) -> None:
    settings = SETTINGS[: SETTINGS.rindex("}")] + PROVIDER + "}"
    messages = failed_assertions(evaluate, host(settings))
    assert messages == [
        'services.turret.settings.providers.gh-app.private_key names the credential "gh-app-key",'
        " which services.turret.credentials does not provide (provided: alice-token, gitea-token)."
    ]


CLOUD = """providers.vault = {
      type = "vault"; url = "https://vault.internal:8200";
      role_id = "vault-role-id"; secret_id = "gitea-token";
    };
    providers.aws = {
      type = "aws_sts"; role_arn = "arn:aws:iam::123456789012:role/r"; region = "eu-west-1";
      access_key_id = "aws-key-id"; secret_access_key = "aws-secret";
    };"""


def test_module_finds_the_cloud_providers_credentials(evaluate: ModuleEval) -> None:
    settings = SETTINGS[: SETTINGS.rindex("}")] + CLOUD + "}"
    messages = failed_assertions(evaluate, host(settings))
    provided = "(provided: alice-token, gitea-token)."
    assert sorted(messages) == sorted(
        f'services.turret.settings.providers.{p}.{k} names the credential "{n}", which'
        f" services.turret.credentials does not provide {provided}"
        for p, k, n in [
            ("aws", "access_key_id", "aws-key-id"),
            ("aws", "secret_access_key", "aws-secret"),
            ("vault", "role_id", "vault-role-id"),
        ]
    )
