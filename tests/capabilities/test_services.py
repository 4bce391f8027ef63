"""Catalog capabilities as real services behave (issue 10, section 7), against the fakes:
Matrix room ids of every room version, message events only, magnet links that cannot make
qBittorrent connect anywhere, and check-config refusing grants that could never be met."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.capabilities.conftest import V12_ROOM, CapGateway, make_capability_gateway
from tests.capabilities.test_config import BASE, _issues
from tests.gateway import Canaries
from turret.capabilities.catalog.matrix import ROOM_ID
from turret.capabilities.magnet import magnet_problem, pattern
from turret.config import load_config

HASH = "c" * 40
MAGNET = f"magnet:?xt=urn:btih:{HASH}"
TRACKER = "https://tracker.example/announce"
ROOM_IDS_OK = [
    V12_ROOM,
    "!" + "A" * 43,
    "!" + "-_" * 21 + "z",
    "!ops:example.org",
    "!OGEhHVWSdvArJzumhm:matrix.org",
    "!room:example.org:8448",
    "!room:[::1]:8448",
    "!room:127.0.0.1",
]
ROOM_IDS_BAD = [
    "!" + "A" * 42,  # one character short of a v12 id, and no server
    "!" + "A" * 44,
    "!" + "A" * 42 + "=",  # padded base64
    "!" + "A" * 42 + "/",  # standard, not url-safe, base64
    "!" + "A" * 42 + "+",
    "#alias:example.org",
    "!a/b:example.org",
    "!a:example.org/x",
    "!a:example.org:99999999",
    "!a:exa mple.org",
    "!:example.org",
    "!a:",
    "",
    "!",
]


@pytest.mark.parametrize("room", ROOM_IDS_OK)
def test_room_id_pattern_accepts_every_room_version(room: str) -> None:
    assert re.fullmatch(ROOM_ID, room, re.ASCII)


@pytest.mark.parametrize("room", ROOM_IDS_BAD)
def test_room_id_pattern_refuses_what_is_not_a_room_id(room: str) -> None:
    assert not re.fullmatch(ROOM_ID, room, re.ASCII)


async def test_matrix_send_and_read_in_a_v12_room(capgw: CapGateway) -> None:
    sent = await capgw.call("chat.send_message", {"room_id": V12_ROOM, "body": "hello v12"})
    assert sent.status == 200, await sent.text()
    seen = capgw.fakes.requests("matrix")[-1]
    assert seen.raw_path.startswith(f"/_matrix/client/v3/rooms/{V12_ROOM}/send/m.room.message/")
    read = await capgw.call("chat.read_messages", {"room_id": V12_ROOM})
    assert read.status == 200
    assert [m["body"] for m in (await read.json())["result"]["messages"]] == ["hello v12"]


@pytest.mark.parametrize("room", ["!" + "A" * 42, "!" + "A" * 42 + "=", "#ops:example.org"])
async def test_matrix_malformed_room_ids_are_422(capgw: CapGateway, room: str) -> None:
    resp = await capgw.call("chat.read_messages", {"room_id": room})
    assert resp.status == 422
    assert room not in (await resp.json())["error"]["message"]


async def test_matrix_read_messages_returns_message_events_only_up_to_limit(
    capgw: CapGateway,
) -> None:
    room = "!ops:example.org"
    for i in range(4):
        await capgw.call("chat.send_message", {"room_id": room, "body": f"m{i}"})
    base = {"room_id": room, "sender": "@a:example.org", "origin_server_ts": 1}
    capgw.fakes.messages[room][2:2] = [
        {**base, "type": "m.room.topic", "event_id": "$t", "state_key": "", "content": {}},
        {**base, "type": "m.room.message", "event_id": "$redacted", "content": {}},
        {**base, "type": "m.reaction", "event_id": "$r", "content": {"m.relates_to": {}}},
    ]
    resp = await capgw.call("chat.read_messages", {"room_id": room, "limit": 3})
    messages = (await resp.json())["result"]["messages"]
    # The server filter gives 3 message events; the redacted one (no body) is left out.
    assert [m["body"] for m in messages] == ["m3", "m2"]
    assert all(m["type"] == "m.room.message" and m["msgtype"] == "m.text" for m in messages)
    everything = await capgw.call("chat.read_messages", {"room_id": room, "limit": 100})
    bodies = [m["body"] for m in (await everything.json())["result"]["messages"]]
    assert bodies == ["m3", "m2", "m1", "m0"]  # no state events, no null bodies


# --- magnets ------------------------------------------------------------------------------------

MAGNETS_OK = [
    MAGNET,
    f"magnet:?xt=urn:btih:{HASH.upper()}",
    "magnet:?xt=urn:btih:" + "A2" * 16,  # base32
    f"magnet:?xt=urn:btih:{HASH}&dn=debian-12.iso",
    f"magnet:?dn=debian+12&xt=urn:btih:{HASH}",  # any order
    f"magnet:?xt=urn:btih:{HASH}&dn=caf%C3%A9",
    f"magnet:?xt=urn:btih:{HASH}&xt=urn:btmh:1220{'d' * 64}",  # a hybrid v1+v2 torrent
]
MAGNETS_REFUSED = [
    (f"{MAGNET}&tr=http://127.0.0.1:8080/", "'tr'"),
    (f"{MAGNET}&tr=udp%3A%2F%2F169.254.169.254%3A80", "'tr'"),
    (f"{MAGNET}&%74r=http://10.0.0.1/", "'tr'"),  # a percent-encoded key
    (f"{MAGNET}&%74%72=http://10.0.0.1/", "'tr'"),
    (f"{MAGNET}&TR=http://10.0.0.1/", "unknown"),  # keys are case-sensitive: TR is no key
    (f"{MAGNET}&Tr=http://10.0.0.1/", "unknown"),
    (f"{MAGNET}&ws=http://10.0.0.1/seed", "'ws'"),
    (f"{MAGNET}&x.pe=10.0.0.1:6881", "'x.pe'"),
    (f"{MAGNET}&as=http://10.0.0.1/t.torrent", "'as'"),
    (f"{MAGNET}&xs=http://10.0.0.1/t.torrent", "'xs'"),
    (f"{MAGNET}&kt=secret", "'kt'"),
    (f"{MAGNET}&mt=http://10.0.0.1/list", "'mt'"),
    (f"{MAGNET}&so=0-3", "'so'"),
    (f"{MAGNET}&xl=100", "'xl'"),
    (f"{MAGNET}&x.foo=bar", "unknown"),
    (f"{MAGNET}&amp;tr=http://10.0.0.1/", "characters"),
    (f"{MAGNET};tr=http://10.0.0.1/", "characters"),
    (f"{MAGNET}&dn=x;tr=http://10.0.0.1/", "characters"),
    (f"{MAGNET}&xt=urn:btih:{'e' * 40}", "two xt"),  # a second hash of the same kind
    (f"{MAGNET}\nmagnet:?xt=urn:btih:{'e' * 40}&tr=http://10.0.0.1/", "characters"),
    (f"{MAGNET}&dn=a%0Amagnet:?xt=urn:btih:{'e' * 40}", "printable"),
    (f"{MAGNET}magnet:?tr=http://10.0.0.1/", "info hash"),
    (f"{MAGNET}&dn=magnet:?xt=urn:btih:{'e' * 40}&tr=http://10.0.0.1/", "'tr'"),
    (f"{MAGNET} &tr=http://10.0.0.1/", "characters"),
    (f"{MAGNET}\t", "characters"),
    (f" {MAGNET}", "starting with"),
    (f"{MAGNET}\r\n", "characters"),
    (f"MAGNET:?xt=urn:btih:{HASH}", "starting with"),
    (f"{MAGNET}#tr=http://10.0.0.1/", "characters"),
    (f"{MAGNET}&dn=%zz", "stray"),
    (f"{MAGNET}&dn=%FF", "well-formed"),  # not UTF-8
    (f"{MAGNET}&&dn=x", "well-formed"),
    (f"{MAGNET}&dn", "well-formed"),
    ("magnet:?dn=only-a-name", "info hash"),
    (f"magnet:?xt=urn:btih:{HASH[:-1]}", "not a BitTorrent info hash"),
    (f"magnet:?xt=urn:sha1:{HASH}", "not a BitTorrent info hash"),
    (f"{MAGNET}&dn={'n' * 256}", "printable"),
]


@pytest.mark.parametrize("link", MAGNETS_OK)
def test_magnet_problem_accepts_hash_and_name(link: str) -> None:
    assert magnet_problem(link) is None


@pytest.mark.parametrize(("link", "why"), MAGNETS_REFUSED)
def test_magnet_problem_refuses_every_address_and_encoding(link: str, why: str) -> None:
    problem = magnet_problem(link)
    assert problem is not None and why in problem
    assert "10.0.0.1" not in problem and "169.254" not in problem


def test_magnet_problem_allows_listed_trackers_exactly() -> None:
    allowed = frozenset({TRACKER})
    for spelled in (TRACKER, "https%3A%2F%2Ftracker.example%2Fannounce"):
        assert magnet_problem(f"{MAGNET}&tr={spelled}", allowed) is None
    for other in (TRACKER + "/", TRACKER.upper(), "https://tracker.example/announce?x=1"):
        assert magnet_problem(f"{MAGNET}&tr={other}", allowed) is not None
    assert magnet_problem(f"{MAGNET}&tr={TRACKER}&ws={TRACKER}", allowed) is not None


def test_magnet_pattern_is_a_subset_of_what_is_accepted() -> None:
    listed = re.compile(pattern((TRACKER,)), re.ASCII)
    quoted = "https%3A%2F%2Ftracker.example%2Fannounce"
    link = f"{MAGNET}&dn=debian&tr={quoted}&tr={quoted}"
    assert listed.fullmatch(link) and magnet_problem(link, frozenset({TRACKER})) is None
    assert listed.fullmatch(f"{MAGNET}&tr={TRACKER}")
    assert not re.fullmatch(pattern(), f"{MAGNET}&tr={quoted}", re.ASCII)


@pytest.mark.parametrize(("link", "why"), MAGNETS_REFUSED[:20])
async def test_qbittorrent_add_torrent_refuses_magnet_addresses(
    capgw: CapGateway, link: str, why: str
) -> None:
    params = {"magnet": link, "category": "linux-isos"}
    resp = await capgw.call("qbit.add_torrent", params, agent="ops/alice")
    assert resp.status == 422
    message = (await resp.json())["error"]["message"]
    assert message.startswith("params.magnet: ")
    assert why in message or "must not contain CR, LF or NUL" in message
    assert "10.0.0.1" not in message
    assert not [s for s in capgw.fakes.requests("qbittorrent") if "torrents/add" in s.raw_path]


async def test_qbittorrent_trackers_option_allows_listed_trackers(
    tmp_path: Path, leak_check: Canaries
) -> None:
    gw, servers = await make_capability_gateway(
        tmp_path, creds=leak_check, qbit_magnet=f"{{trackers: [{TRACKER}]}}"
    )
    try:
        params = {"magnet": f"{MAGNET}&tr={TRACKER}", "category": "linux-isos"}
        ok = await gw.call("qbit.add_torrent", params, agent="ops/alice")
        assert ok.status == 200, await ok.text()
        params["magnet"] = f"{MAGNET}&tr=https://tracker.evil/announce"
        refused = await gw.call("qbit.add_torrent", params, agent="ops/alice")
        assert refused.status == 422
    finally:
        await gw.client.close()
        for server in servers:
            await server.close()


@pytest.mark.parametrize(
    ("magnet", "message"),
    [
        ("{trackers: [ftp://x/]}", "must be a tracker URL"),
        ("{trackers: ['http://a b/']}", "must be a tracker URL"),
        ("{trackers: http://x/}", "must be a list"),
        ("{peers: []}", "unknown key"),
    ],
)
def test_config_magnet_option_is_checked(magnet: str, message: str) -> None:
    text = BASE.replace("kind: qbittorrent\n", f"kind: qbittorrent\n    magnet: {magnet}\n")
    issues = _issues(text)
    assert any(p.startswith("services.qbit.magnet") and message in m for p, _, m in issues)


def test_config_magnet_option_is_for_qbittorrent_only() -> None:
    text = BASE.replace("kind: proxmox\n", "kind: proxmox\n    magnet: {trackers: []}\n")
    assert ("services.pve.magnet", 8, "magnet: is for services of kind: qbittorrent") in _issues(
        text
    )


# --- check-config: grant values the parameter never accepts -------------------------------------


@pytest.mark.parametrize(
    ("grant", "key", "why"),
    [
        (
            '{name: qbit.list_torrents, params: {category: {one_of: [ok, "-bad"]}}}',
            "[1]",
            "pattern",
        ),
        ('{name: "qbit.*", params: {category: {one_of: ["a\\nb"]}}}', "[0]", "CR, LF"),
        ("{name: pve.pct_status, params: {ctid: {one_of: [100, 5]}}}", "[1]", "less than 100"),
        ("{name: pve.pct_status, params: {ctid: {one_of: [1000000000]}}}", "[0]", "more than"),
        ('{name: qbit.add_torrent, params: {magnet: {one_of: ["magnet:?xt=x"]}}}', "[0]", ""),
    ],
)
def test_config_grant_one_of_values_must_be_accepted_by_the_parameter(
    grant: str, key: str, why: str
) -> None:
    issues = _issues(BASE + f"    capabilities:\n      - {grant}\n")
    (issue,) = issues
    path, line, message = issue
    assert path.startswith("agents.a.capabilities[0].params.") and path.endswith(f"one_of{key}")
    assert line == 18 and "never accepts it" in message and why in message


def test_config_grant_one_of_accepted_values_load() -> None:
    text = BASE + (
        "    capabilities:\n"
        "      - {name: pve.pct_status, params: {ctid: {one_of: [100, 101]}}}\n"
        "      - {name: qbit.list_torrents, params: {category: {one_of: [linux-isos]}}}\n"
    )
    assert load_config(text).agents["a"].capabilities[0].params[0][0] == "ctid"
