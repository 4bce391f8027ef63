"""`bind:` and `require_contained:` read from the config, for agents and groups."""

from __future__ import annotations

import pwd

from turret.config import load_config
from turret.config.bind import read_bind_settings
from turret.config.checker import Checker
from turret.config.yamlload import read_yaml
from turret.model import PeerBinding
from turret.peers import bindings_of, must_be_contained

HEAD = """
services:
  gitea: {url: "https://git.example.org", auth: {bearer: gitea-token}}
agents:
  bot:
    token_sha256: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
"""


def test_bind_reads_uids_users_and_units_as_one_binding() -> None:
    root = pwd.getpwuid(0).pw_name
    config = load_config(
        HEAD
        + f"    bind: [{{uid: 1000}}, {{user: {root}}}, {{unit: opencode.service}},"
        + " {unit: run-x.scope}]\n    require_contained: true\n"
    )
    bot = config.agents["bot"]
    assert bot.bind == PeerBinding(
        frozenset({1000, 0}), frozenset({"opencode.service", "run-x.scope"})
    )
    assert bot.require_contained


def test_bind_single_mapping_and_none() -> None:
    config = load_config(HEAD + "    bind: {unit: agent@a.service}\n")
    assert config.agents["bot"].bind == PeerBinding(units=frozenset({"agent@a.service"}))
    plain = load_config(HEAD).agents["bot"]
    assert plain.bind is None and not plain.require_contained
    assert bindings_of(plain) == ()


def test_bind_of_groups_applies_to_their_agents() -> None:
    config = load_config(
        HEAD
        + "groups:\n  llm:\n    agents: [b*]\n    bind: {uid: 1001}\n    require_contained: true\n"
        + "  ops:\n    agents: [ops]\n    bind: {uid: 1002}\n"
    )
    bot = config.agents["bot"]
    assert bindings_of(bot) == (PeerBinding(uids=frozenset({1001})),)
    assert must_be_contained(bot) and not bot.require_contained


def test_read_bind_settings_resolves_users_at_load_through_the_lookup() -> None:
    asked: list[str] = []

    def lookup(name: str) -> int:
        asked.append(name)
        if name == "ghost":
            raise KeyError(name)
        return {"opencode": 1000, "nobody": 65534}[name]

    text = "bind: [{user: opencode}, {user: ghost}, {user: nobody}]\n"
    ck = Checker(read_yaml(text))
    binding, contained = read_bind_settings(ck, "", read_yaml(text).data, lookup)
    assert binding == PeerBinding(uids=frozenset({1000}))
    assert not contained
    assert asked == ["opencode", "ghost", "nobody"]
    problems = [str(i) for i in ck.issues]
    assert any("bind[1].user: no user 'ghost'" in p for p in problems)
    assert any("bind[2].user: uid 65534 is the overflow uid" in p for p in problems)
