"""Magnet links an agent may hand to a torrent client: an info hash and a name, nothing that
makes the client connect somewhere of the agent's choosing.

A magnet's `tr=` (tracker), `ws=` (web seed), `x.pe=` (peer), `as=`/`xs=` (sources), `mt=`,
`so=`, `kt=` and the like all name addresses the client will contact: through them an agent
could make qBittorrent send requests to any host, a server-side request forgery through the
upstream. The link is parsed as a URI query (`urllib.parse`), so encodings of a key (`%74r`),
other separators (`;`, `&amp;`) or a second link inside cannot smuggle one past the check.
Only `xt` (one per hash kind) and `dn` are accepted, plus `tr=` values an operator lists
exactly (`services.NAME.magnet.trackers`).
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, quote

PREFIX = "magnet:?"
MAX_LENGTH = 4096
# The characters of a URI query (RFC 3986) but ";", which some parsers take as a separator.
_RAW = re.compile(r"[A-Za-z0-9._~!$'()*+,=:@/?%&-]*")
_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")
_XT = {
    "btih": re.compile(r"urn:btih:([0-9a-fA-F]{40}|[A-Z2-7]{32})"),
    "btmh": re.compile(r"urn:btmh:1220[0-9a-fA-F]{64}"),
}
# Magnet keys a refusal may name; any other key is "an unknown key", never quoted.
KNOWN_KEYS = frozenset({"xt", "dn", "tr", "ws", "as", "xs", "kt", "mt", "so", "xl", "x.pe"})
_MAX_NAME = 255

# What the agent is told a magnet looks like: a subset of what `magnet_problem` accepts
# (hash first, an optional second hash of the other kind, an optional name), so a link built
# to this pattern is never refused. Trackers the operator allows are added per service.
_HEX40, _B32 = "[0-9a-fA-F]{40}", "[A-Z2-7]{32}"
_BTIH = f"xt=urn:btih:({_HEX40}|{_B32})"
_BTMH = "xt=urn:btmh:1220[0-9a-fA-F]{64}"
# A name: unreserved characters and percent-escapes of printable ASCII (no controls).
_NAME = r"dn=([A-Za-z0-9._~+-]|%(2[0-9A-Fa-f]|[3-6][0-9A-Fa-f]|7[0-9A-Ea-e])){1,255}"


def pattern(trackers: tuple[str, ...] = ()) -> str:
    """The regular expression the schema lists for a magnet, with the allowed trackers."""
    hashes = f"({_BTIH}(&{_BTMH})?|{_BTMH}(&{_BTIH})?)"
    tail = f"(&{_NAME})?"
    if trackers:
        spelled = sorted({re.escape(s) for t in trackers for s in _spellings(t)})
        tail += f"(&tr=({'|'.join(spelled)}))*"
    return f"magnet:\\?{hashes}{tail}"


def _spellings(tracker: str) -> set[str]:
    """How a tracker URL may be written in a magnet: percent-encoded, or as it is where that
    reads back the same (no "&", "+", "%" or other character the query syntax changes)."""
    forms = {quote(tracker, safe="")}
    if _RAW.fullmatch(tracker) and not set(tracker) & set("&+%"):
        forms.add(tracker)
    return forms


def magnet_problem(link: str, trackers: frozenset[str] = frozenset()) -> str | None:
    """Why `link` is not an acceptable magnet, or None. The problem names a key, never a value."""
    if not link.startswith(PREFIX) or len(link) > MAX_LENGTH:
        return f"must be one magnet link starting with {PREFIX!r}, at most {MAX_LENGTH} characters"
    query = link[len(PREFIX) :]
    if not _RAW.fullmatch(query) or _PERCENT.search(query):
        return "has characters a magnet link does not use (spaces, ';', '#' or a stray '%')"
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=True, errors="strict")
    except (ValueError, UnicodeDecodeError):
        return "is not a well-formed magnet link"
    hashes: set[str] = set()
    for key, value in pairs:
        problem = _pair_problem(key, value, hashes, trackers)
        if problem:
            return problem
    return None if hashes else "needs an xt=urn:btih: or xt=urn:btmh: info hash"


def _pair_problem(key: str, value: str, hashes: set[str], trackers: frozenset[str]) -> str | None:
    if key == "xt":
        kind = next((k for k, p in _XT.items() if p.fullmatch(value)), None)
        if kind is None:
            return "has an xt that is not a BitTorrent info hash"
        if kind in hashes:
            return "has two xt info hashes of the same kind"
        hashes.add(kind)
        return None
    if key == "dn":
        if len(value) > _MAX_NAME or not value.isprintable():
            return f"has a dn that is not a printable name of at most {_MAX_NAME} characters"
        return None
    if key == "tr" and value in trackers:
        return None
    if key in KNOWN_KEYS:
        hint = " (only trackers the service's magnet.trackers lists)" if key == "tr" else ""
        return f"has a {key!r} parameter, which is not allowed{hint}"
    return "has an unknown parameter: only xt and dn are allowed"
