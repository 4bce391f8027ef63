"""`services.turret.settings.agents.<name>.bind`: rendered as written, and a bound unit that the
host does not define is refused at evaluation."""

from __future__ import annotations

import pytest

from tests.nix.nixtools import ModuleEval
from tests.nix.test_nix_module import host, rendered_config

DIGEST = "ab" * 32
SERVICES = 'services.forge = { url = "http://127.0.0.1:3000"; auth.bearer = "gitea-token"; };'


def bound_host(bind: str, defined: str = "", groups: str = "") -> str:
    agent = f'agents.bot = {{ token_sha256 = "{DIGEST}"; proxy = [ ]; bind = {bind}; }};'
    settings = "{\n    " + SERVICES + "\n    " + agent + "\n    " + groups + "\n  }"
    credentials = '{ "gitea-token" = config.sops.secrets."turret/gitea-token".path; }'
    source = host(settings, credentials)
    # the host's own services, next to services.turret
    return source.replace("  sops.secrets.", defined + "\n  sops.secrets.", 1)


OPENCODE = 'systemd.services.opencode = { description = "agent"; };'
TEMPLATE = 'systemd.services."agent@" = { description = "agent instances"; };'


def test_bind_unit_renders_as_written(evaluate: ModuleEval) -> None:
    bind = '[ { unit = "opencode.service"; } { uid = 1000; } { user = "alice"; } ]'
    system = evaluate("host.system", bound_host(bind, OPENCODE))
    assert rendered_config(system)["agents"]["bot"]["bind"] == [
        {"unit": "opencode.service"},
        {"uid": 1000},
        {"user": "alice"},
    ]
    assert evaluate("host.checks", bound_host(bind, OPENCODE))["failedAssertions"] == []


@pytest.mark.parametrize(
    ("bind", "defined"),
    [
        ('{ unit = "opencode.service"; }', OPENCODE),
        ('[ { uid = 1000; } { unit = "opencode.service"; } ]', OPENCODE),
        ('{ unit = "agent@a.service"; }', TEMPLATE),  # an instance of a defined template
        ('{ unit = "session-3.scope"; }', ""),  # a scope is transient: nothing to look up
        ("{ uid = 1000; }", ""),
    ],
)
def test_bind_unit_defined_on_the_host_passes(
    evaluate: ModuleEval, bind: str, defined: str
) -> None:
    assert evaluate("host.checks", bound_host(bind, defined))["failedAssertions"] == []


@pytest.mark.parametrize(
    ("bind", "defined", "unit"),
    [
        ('{ unit = "opencode.service"; }', "", "opencode.service"),
        ('[ { uid = 1000; } { unit = "opencode.service"; } ]', "", "opencode.service"),
        ('{ unit = "opencod.service"; }', OPENCODE, "opencod.service"),  # a typo
        ('{ unit = "agent@a.service"; }', OPENCODE, "agent@a.service"),  # no such template
        ('{ unit = "agent@.service"; }', "", "agent@.service"),
    ],
)
def test_bind_unit_not_defined_on_the_host_is_refused(
    evaluate: ModuleEval, bind: str, defined: str, unit: str
) -> None:
    messages = evaluate("host.checks", bound_host(bind, defined))["failedAssertions"]
    (message,) = messages
    assert message.startswith(f'services.turret.settings.agents.bot.bind.unit = "{unit}", ')
    assert "is not defined" in message


def test_bind_unit_of_a_group_is_checked_too(evaluate: ModuleEval) -> None:
    groups = 'groups.llm = { agents = [ "b*" ]; bind = { unit = "ghost.service"; }; };'
    messages = evaluate("host.checks", bound_host("{ uid = 1000; }", "", groups))
    (message,) = messages["failedAssertions"]
    assert message.startswith('services.turret.settings.groups.llm.bind.unit = "ghost.service"')


# The agent unit of the documented NixOS example (/work/notes/r2/bind.md): contained, bound.
CONTAINED_AGENT = """
  systemd.services.opencode = {
    description = "opencode, an LLM agent that reaches the world only through Turret";
    wantedBy = [ "multi-user.target" ];
    serviceConfig = {
      ExecStart = "/run/current-system/sw/bin/opencode serve";
      DynamicUser = true;
      SupplementaryGroups = [ "turret-agents" ];
      PrivateNetwork = true;
      NoNewPrivileges = true;
      CapabilityBoundingSet = "";
      AmbientCapabilities = "";
      ProtectSystem = "strict";
      ProtectHome = true;
      PrivateTmp = true;
      LoadCredential = [ "turret-token:/run/secrets/opencode/turret-token" ];
    };
  };
"""


def test_bind_documented_contained_agent_evaluates(evaluate: ModuleEval) -> None:
    bind = '{ unit = "opencode.service"; }; require_contained = true'
    source = bound_host(bind, CONTAINED_AGENT)
    assert evaluate("host.checks", source)["failedAssertions"] == []
    system = evaluate("host.system", source)
    agent = rendered_config(system)["agents"]["bot"]
    assert agent["bind"] == {"unit": "opencode.service"} and agent["require_contained"] is True
    assert system["services"]["opencode"]["serviceConfig"]["PrivateNetwork"] is True
