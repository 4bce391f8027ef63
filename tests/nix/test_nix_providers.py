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
