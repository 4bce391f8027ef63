"""The config's settings for derived tokens: `max_ttl`, `may_derive`, `expires`."""

from __future__ import annotations

import pytest

from turret.config import load_config
from turret.config.leases import parse_duration, parse_expiry
from turret.errors import ConfigError
from turret.tokens import DEFAULT_MAX_TTL, EXPIRY_WARNING, derive_settings, expiring_agents

BASE = """\
services:
  git: {url: "https://git.example", auth: {bearer: t}}
groups:
  helpers:
    agents: ["h*"]
    max_ttl: 2h
    may_derive: false
  tight:
    agents: ["h1"]
    max_ttl: 30m
agents:
  a: {token_sha256: "A", max_ttl: 7d, expires: 2030-01-01}
  h1: {token_sha256: "B"}
  h2: {token_sha256: "C", may_derive: true, max_ttl: 1h}
  z: {token_sha256: "D", expires: "2030-01-01T12:00:00+02:00"}
"""
for _letter in "ABCD":
    BASE = BASE.replace(f'"{_letter}"', f'"{_letter.lower() * 64}"')


def test_config_derive_settings_agent_wins_then_strictest_group() -> None:
    agents = load_config(BASE).agents
    assert derive_settings(agents["a"]) == (7 * 86400, True)
    assert derive_settings(agents["h1"]) == (1800, False)
    assert derive_settings(agents["h2"]) == (3600, True)
    assert agents["a"].expires == 1893456000.0
    assert agents["z"].expires == 1893456000.0 + 10 * 3600  # 12:00 at +02:00
    assert agents["h1"].expires is None


def test_config_derive_default_is_24h_and_may_derive() -> None:
    text = 'services: {}\nagents:\n  a: {token_sha256: "' + "a" * 64 + '"}\n'
    assert derive_settings(load_config(text).agents["a"]) == (DEFAULT_MAX_TTL, True)


@pytest.mark.parametrize(
    ("old", "new", "where"),
    [
        ("max_ttl: 7d", "max_ttl: 7", "agents.a.max_ttl"),
        ("max_ttl: 7d", "max_ttl: 400d", "agents.a.max_ttl"),
        ("max_ttl: 7d", "max_ttl: 1h1x", "agents.a.max_ttl"),
        ("expires: 2030-01-01}", "expires: soon}", "agents.a.expires"),
        ("expires: 2030-01-01}", 'expires: "2030-01-01T00:00:00"}', "agents.a.expires"),
        ("may_derive: true", "may_derive: yes please", "agents.h2.may_derive"),
        ("max_ttl: 2h", "max_ttl: 0s", "groups.helpers.max_ttl"),
        ("may_derive: false", "may_derive: 0", "groups.helpers.may_derive"),
    ],
)
def test_config_derive_settings_refused_with_their_path(old: str, new: str, where: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(BASE.replace(old, new, 1))
    assert [i.path for i in info.value.issues] == [where]


def test_durations_and_expiry_parse() -> None:
    assert parse_duration("1h30m") == 5400 and parse_duration("90s") == 90
    assert parse_duration("") is None and parse_duration("1.5h") is None
    assert parse_duration(" 1h") is None and parse_duration(3600) is None
    assert parse_expiry("2030-01-01") == 1893456000.0
    assert parse_expiry("2030-01-01T00:00:00Z") == 1893456000.0
    assert parse_expiry("tomorrow") is None and parse_expiry(5) is None


def test_expiring_agents_names_the_expired_and_the_nearly_expired() -> None:
    digests = ["1" * 64, "2" * 64, "3" * 64, "4" * 64]
    config = load_config(
        f"""
agents:
  gone: {{token_sha256: "{digests[0]}", expires: 2020-01-01}}
  soon: {{token_sha256: "{digests[1]}", expires: 2020-01-10}}
  later: {{token_sha256: "{digests[2]}", expires: 2021-01-01}}
  never: {{token_sha256: "{digests[3]}"}}
"""
    )
    now = 1577836800.0 + 86400  # 2020-01-02
    assert expiring_agents(config, now) == [
        ("gone", 1577836800.0, True),
        ("soon", 1578614400.0, False),
    ]
    # The warning window is inclusive: exactly EXPIRY_WARNING ahead warns, a second more does not.
    assert [a for a, _, _ in expiring_agents(config, 1578614400.0 - EXPIRY_WARNING)] == [
        "gone",
        "soon",
    ]
    assert [a for a, _, _ in expiring_agents(config, 1578614400.0 - EXPIRY_WARNING - 1)] == [
        "gone"
    ]
