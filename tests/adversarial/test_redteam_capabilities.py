# ruff: noqa: RUF001 - look-alike characters are the attack under test
"""Red team, capabilities: magnet smuggling and Matrix room-id look-alikes (all held).

A magnet link reaches qBittorrent as one multipart field, so a value is decoded once, by
libtorrent: a tracker smuggled inside `dn` stays part of the name. What must be refused is any
second reading of the link's own keys: encoded keys, other separators, keys in another case,
`tr.N`, a second link or query inside, an `xt` that is a URL. Room ids must be ASCII as the
pattern spells them: a Cyrillic or fullwidth look-alike, a trailing newline, a `/`, `?` or `#`
is not a room id.
"""

from __future__ import annotations

import pytest

from turret.capabilities.catalog.matrix import ROOM_ID
from turret.capabilities.magnet import magnet_problem, pattern
from turret.capabilities.schema import compiled

XT = "xt=urn:btih:" + "a" * 40
REFUSED = [
    XT + "&%74r=http://evil/",
    XT + "&%74%72=http://evil/",
    XT + "&TR=http://evil/",
    XT + "&Tr=http://evil/",
    XT + "&tr.1=http://evil/",
    XT + "&tr%2E1=http://evil/",
    XT + "&x.pe=10.0.0.1:80",
    XT + "&x%2Epe=10.0.0.1:80",
    XT + "&ws=http://evil/",
    XT + "&as=http://evil/",
    XT + "&xs=http://evil/",
    XT + "&&tr=http://evil/",
    XT + "&amp;tr=http://evil/",
    XT + ";tr=http://evil/",
    XT + "%26tr=http://evil/",
    XT + "?tr=http://evil/",
    XT + "#&tr=http://evil/",
    XT + "\n&tr=http://evil/",
    XT + "&tr=http://evil/",
    "xt=http://evil/x",
    "xt=urn:btih:http://evil/",
    XT + "&xt=urn:btih:" + "b" * 40,
    XT + "&xt=urn:btih:" + "A" * 32,
    XT + "&dn=%0Aevil",
    XT + "&dn=%E2%80%AEevil",
    XT + "&dn=%ff",
    XT + "&=x",
    XT + "&dn",
]
ACCEPTED = [
    # Decoded once by libtorrent, these stay the torrent's name: no tracker is added.
    XT + "&dn=foo%26tr%3Dhttp%3A%2F%2Fevil",
    XT + "&dn=foo%2526tr%253Dhttp%253A%252F%252Fevil",
    XT + "&dn=a?tr=http://evil/",
    XT + "&dn=%EF%BC%86tr%EF%BC%9Dhttp://evil",
    XT + "&xt=urn:btmh:1220" + "b" * 64,
]


@pytest.mark.parametrize("query", REFUSED)
def test_redteam_magnet_smuggling_refused(query: str) -> None:
    problem = magnet_problem("magnet:?" + query)
    assert problem is not None
    assert "evil" not in problem and "10.0.0.1" not in problem


@pytest.mark.parametrize("query", ACCEPTED)
def test_redteam_magnet_name_holding_a_url_is_only_a_name(query: str) -> None:
    assert magnet_problem("magnet:?" + query) is None


def test_redteam_magnet_listed_pattern_refuses_what_the_parser_refuses() -> None:
    listed = compiled(pattern())
    for query in REFUSED:
        assert not listed.fullmatch("magnet:?" + query), query


@pytest.mark.parametrize(
    "room",
    [
        "!abc:examрle.org",  # Cyrillic er
        "!аbc:example.org",  # Cyrillic a
        "!abc:example.org\n",
        "!" + "Ａ" * 43,
        "!" + "A" * 42 + "\u200b",
        "!abc:example.org/../x",
        "!abc:example.org?x",
        "!abc:example.org#x",
        "!abc:exa%2Fmple.org",
        "#alias:example.org",
        "!abc:[]:1",
        "!abc:example.org:99999999",
    ],
)
def test_redteam_room_id_look_alikes_refused(room: str) -> None:
    assert not compiled(ROOM_ID).fullmatch(room)
