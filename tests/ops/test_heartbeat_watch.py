"""The dead-man switch's decisions, without I/O: misses in a row, a late check-in, acting once
per failure, and the config it is read from."""

from __future__ import annotations

import pytest

from turret.config import load_config
from turret.errors import ConfigError
from turret.heartbeat import (
    CHECKIN,
    HEARTBEAT,
    CheckinSettings,
    HeartbeatSettings,
    Watch,
    next_check,
)
from turret.netpolicy import AddressPolicy, parse_network

BEAT = HeartbeatSettings("https://hc.example.org/ping", misses=3)
DAY = CheckinSettings(86400.0, "revoke_derived")
BASE = """\
services:
  forge: {url: "http://127.0.0.1:3000", auth: {bearer: gitea-token}}
agents:
  alice: {token_sha256: "%s"}
""" % ("ab" * 32)


def test_watch_fires_on_the_nth_miss_in_a_row_and_only_once() -> None:
    watch = Watch()
    assert watch.probed(BEAT, "HTTP 500") is None
    assert watch.probed(BEAT, None) is None  # a beat in between: the count starts again
    assert watch.probed(BEAT, "timeout") is None
    assert watch.probed(BEAT, "timeout") is None
    fired = watch.probed(BEAT, "connection failed")
    assert fired is not None and fired.watch == HEARTBEAT and fired.action == "seal"
    assert "3 times in a row" in fired.why and "connection failed" in fired.why
    for _ in range(10):
        assert watch.probed(BEAT, "timeout") is None  # acted once: not again while it fails
    assert watch.probed(BEAT, None) is None and HEARTBEAT not in watch.fired
    for _ in range(2):
        assert watch.probed(BEAT, "HTTP 302") is None
    assert watch.probed(BEAT, "HTTP 302") is not None  # a new failure after a recovery


def test_watch_a_single_miss_fires_when_misses_is_one() -> None:
    watch = Watch()
    assert watch.probed(HeartbeatSettings("https://x.example", misses=1), "timeout") is not None


def test_watch_fires_once_for_a_late_checkin_and_rearms_on_a_new_one() -> None:
    watch = Watch()
    assert watch.checked(DAY, last=0.0, now=86400.0) is None  # exactly max_interval: in time
    fired = watch.checked(DAY, last=0.0, now=86401.0)
    assert fired is not None and fired.watch == CHECKIN and fired.action == "revoke_derived"
    assert "86401 s" in fired.why
    assert watch.checked(DAY, last=0.0, now=200000.0) is None
    assert watch.checked(DAY, last=190000.0, now=200000.0) is None and not watch.fired
    assert watch.checked(DAY, last=190000.0, now=190000.0 + 86401) is not None


def test_watch_heartbeat_and_checkin_fire_independently() -> None:
    watch = Watch()
    assert watch.checked(DAY, 0.0, 1e6) is not None
    for _ in range(2):
        watch.probed(BEAT, "timeout")
    assert watch.probed(BEAT, "timeout") is not None
    assert watch.fired == {HEARTBEAT, CHECKIN}


def test_next_check_follows_the_shortest_watch() -> None:
    assert next_check(None, None) == 60.0
    assert next_check(HeartbeatSettings("https://x.example", interval=15), None) == 15.0
    assert next_check(None, CheckinSettings(300.0)) == 30.0
    assert next_check(HeartbeatSettings("https://x.example", interval=1), None) == 1.0


@pytest.mark.parametrize(
    ("section", "heartbeat", "checkin"),
    [
        ("", None, None),
        ("heartbeat: {url: 'https://hc-ping.com/abc'}\n",
         HeartbeatSettings("https://hc-ping.com/abc"), None),
        ("heartbeat: {url: 'http://10.0.0.5:8080/hb/', interval: 2m, timeout: 5s, misses: 5,"
         " on_failure: revoke_derived, allow_networks: [10.0.0.0/24]}\n",
         HeartbeatSettings("http://10.0.0.5:8080/hb", 120.0, 5.0, 5, "revoke_derived",
                           AddressPolicy((parse_network("10.0.0.0/24"),))), None),
        ("checkin: {}\n", None, CheckinSettings()),
        ("checkin:\n", None, CheckinSettings()),
        ("checkin: {max_interval: 7d, on_failure: revoke_derived}\n",
         None, CheckinSettings(7 * 86400.0, "revoke_derived")),
        ("checkin: {max_interval: 3600}\nheartbeat: {url: 'https://x.example', interval: 30}\n",
         HeartbeatSettings("https://x.example", 30.0), CheckinSettings(3600.0)),
    ],
)  # fmt: skip
def test_heartbeat_config_reads_both_watches(
    section: str, heartbeat: HeartbeatSettings | None, checkin: CheckinSettings | None
) -> None:
    config = load_config(BASE + section)
    assert config.heartbeat == heartbeat and config.checkin == checkin


@pytest.mark.parametrize(
    ("section", "where", "says"),
    [
        ("heartbeat: https://x.example\n", "heartbeat", "must be a mapping"),
        ("heartbeat: {interval: 60}\n", "heartbeat", "missing required key 'url'"),
        ("heartbeat: {url: 'ftp://x.example'}\n", "heartbeat.url", "scheme"),
        ("heartbeat: {url: 'https://u:p@x.example'}\n", "heartbeat.url", "user:password"),
        ("heartbeat: {url: 'https://x.example/?key=1'}\n", "heartbeat.url", "query"),
        ("heartbeat: {url: 'https://x.example', interval: 0}\n", "heartbeat.interval", "seconds"),
        ("heartbeat: {url: 'https://x.example', interval: 2d}\n", "heartbeat.interval", "seconds"),
        ("heartbeat: {url: 'https://x.example', interval: -5}\n", "heartbeat.interval", "seconds"),
        ("heartbeat: {url: 'https://x.example', interval: true}\n", "heartbeat.interval",
         "seconds"),
        ("heartbeat: {url: 'https://x.example', interval: soon}\n", "heartbeat.interval",
         "seconds"),
        ("heartbeat: {url: 'https://x.example', timeout: 0s}\n", "heartbeat.timeout", "seconds"),
        ("heartbeat: {url: 'https://x.example', interval: 10, timeout: 20}\n",
         "heartbeat.timeout", "not be longer"),
        ("heartbeat: {url: 'https://x.example', misses: 0}\n", "heartbeat.misses", "integer"),
        ("heartbeat: {url: 'https://x.example', misses: 2.5}\n", "heartbeat.misses", "integer"),
        ("heartbeat: {url: 'https://x.example', on_failure: killswitch}\n",
         "heartbeat.on_failure", "seal, revoke_derived"),
        ("heartbeat: {url: 'https://x.example', allow_networks: [10.0.0.1]}\n",
         "heartbeat.allow_networks[0]", "prefix length"),
        ("heartbeat: {url: 'https://x.example', method: POST}\n", "heartbeat.method",
         "unknown key"),
        ("checkin: 24h\n", "checkin", "must be a mapping"),
        ("checkin: {max_interval: 30s}\n", "checkin.max_interval", "seconds"),
        ("checkin: {max_interval: 400d}\n", "checkin.max_interval", "seconds"),
        ("checkin: {max_interval: 1y}\n", "checkin.max_interval", "seconds"),
        ("checkin: {on_failure: nothing}\n", "checkin.on_failure", "seal, revoke_derived"),
        ("checkin: {every: 1h}\n", "checkin.every", "unknown key"),
    ],
)  # fmt: skip
def test_heartbeat_config_refuses_bad_values_with_the_key_path(
    section: str, where: str, says: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(BASE + section)
    (issue,) = info.value.issues
    assert issue.path == where and says in issue.message, str(info.value)
    assert issue.line is not None and issue.line >= 5
