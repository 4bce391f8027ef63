"""Property-based tests: the path canonicaliser, glob matcher, address classifier, config loader.

No input crashes them, canonical forms are stable, and nothing that escapes a grant is allowed.
"""

from __future__ import annotations

import contextlib
import ipaddress
import posixpath
import unicodedata
from typing import Any
from urllib.parse import unquote

import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from turret.config import load_config
from turret.errors import BadRequest, ConfigError
from turret.netpolicy import AddressPolicy, classify, embedded_ipv4, parse_host
from turret.paths import CanonicalPath, GlobIndex, canonical_path, compile_glob

FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Pieces attackers combine: separators, dots and their encodings, escapes, unicode look-alikes.
PIECES = st.sampled_from(
    [
        "a",
        "me",
        "x",
        "admin",
        ".",
        "..",
        "/",
        "%2e",
        "%2E",
        "%2f",
        "%2F",
        "%5c",
        "%25",
        "%252e",
        "%00",
        "%0a",
        ";",
        "%3b",
        "+",
        "~",
        "%c0%ae",
        "%ef%bc%8e",
        "%e2%80%a5",
        "\\",
        "%ff",
        "%",
        "%zz",
        "@",
        ":",
        "*",
        "%ef%bc%8f",
    ]
)
RAW_PATHS = st.lists(PIECES, max_size=12).map(lambda parts: "/" + "".join(parts))


def _canonical(raw: str) -> CanonicalPath | None:
    try:
        return canonical_path(raw)
    except BadRequest:
        return None


@FAST
@given(st.text(max_size=60))
def test_canonical_path_never_crashes_on_any_text(raw: str) -> None:
    _canonical(raw)
    _canonical("/" + raw)


@FAST
@given(RAW_PATHS)
@example("/a%2Eb/c")  # accepted: the assertions below run at least once
def test_canonical_path_is_stable(raw: str) -> None:
    path = _canonical(raw)
    if path is not None:
        again = canonical_path(path.encoded)
        assert again == path and again.encoded == path.encoded


@FAST
@given(RAW_PATHS)
@example("/a/%2561/b%20c")  # accepted: the assertions below run at least once
def test_canonical_path_has_no_traversal_at_any_decoding_depth(raw: str) -> None:
    path = _canonical(raw)
    if path is None:
        return
    text = path.encoded
    for _ in range(4):
        for form in (text, unicodedata.normalize("NFKC", text)):
            segments = form.split("/")[1:]
            assert "." not in segments and ".." not in segments
            assert posixpath.normpath(form) == form or form == "/"
        text = unquote(text)


@FAST
@given(RAW_PATHS)
@example("/x")  # allowed: the assertions below run at least once
def test_glob_grant_never_allows_an_escape(tail: str) -> None:
    """A path allowed by `/api/v1/repos/me/*` is exactly one segment under that prefix, however
    the rest was written."""
    glob = compile_glob("/api/v1/repos/me/*")
    path = _canonical("/api/v1/repos/me" + tail)
    if path is not None and glob.matches(path):
        assert path.segments[:4] == ("api", "v1", "repos", "me") and len(path.segments) == 5
        decoded = unquote(unquote(path.encoded))
        assert posixpath.normpath(decoded).startswith("/api/v1/repos/me/")


SEGMENT = st.text(alphabet="abc*", min_size=1, max_size=4).filter(lambda s: "**" not in s)


@FAST
@given(
    st.lists(st.one_of(SEGMENT, st.just("**")), max_size=5),
    st.lists(st.sampled_from("abc"), max_size=6),
)
def test_glob_matches_like_a_reference_regex(parts: list[str], segs: list[str]) -> None:
    import re  # noqa: PLC0415 - the reference is local to this test

    pattern = "/" + "/".join(parts)
    glob = compile_glob(pattern)
    regex = "".join(
        "(?:/[^/]*)*" if p == "**" else "/" + "[^/]*".join(re.escape(x) for x in p.split("*"))
        for p in parts
    )
    path = CanonicalPath(tuple(segs))
    reference = "".join("/" + s for s in segs)  # the root is "" here, not "/"
    assert glob.matches(path) == bool(re.fullmatch(regex, reference))


@FAST
@given(
    st.lists(st.lists(st.one_of(SEGMENT, st.just("**")), max_size=4), max_size=8),
    st.lists(st.sampled_from(["a", "b", "ab", "c"]), max_size=5),
)
def test_glob_index_finds_exactly_what_trying_every_glob_finds(
    patterns: list[list[str]], segs: list[str]
) -> None:
    globs = [compile_glob("/" + "/".join(parts)) for parts in patterns]
    path = CanonicalPath(tuple(segs))
    indexed = [i for _, i in GlobIndex((g, i) for i, g in enumerate(globs)).matching(path)]
    assert indexed == [i for i, g in enumerate(globs) if g.matches(path)]


IPV4 = st.integers(0, 2**32 - 1).map(ipaddress.IPv4Address)
IPV6 = st.integers(0, 2**128 - 1).map(ipaddress.IPv6Address)


@FAST
@given(IPV4)
def test_classifier_treats_mapped_forms_as_the_ipv4(addr: ipaddress.IPv4Address) -> None:
    mapped = ipaddress.IPv6Address(f"::ffff:{addr}")
    assert classify(mapped) == classify(addr)
    policy = AddressPolicy()
    assert (policy.refusal(mapped) is None) == (policy.refusal(addr) is None)
    if classify(addr) is not None:
        for wrapper in (f"64:ff9b::{addr}", f"2002:{int(addr) >> 16:x}:{int(addr) & 0xFFFF:x}::1"):
            assert classify(ipaddress.IPv6Address(wrapper)) is not None, wrapper


@FAST
@given(st.one_of(IPV4, IPV6))
def test_classifier_public_means_globally_routable(addr: Any) -> None:
    """Whatever the classifier lets through is not loopback, private, link-local, multicast or
    unspecified, nor hides such an address."""
    if classify(addr) is not None:
        return
    for a in [addr, *(embedded_ipv4(addr) if addr.version == 6 else [])]:
        assert not (a.is_loopback or a.is_link_local or a.is_multicast or a.is_unspecified)
        assert (
            not a.is_private
            or a.is_global
            or (a.version == 6 and a in ipaddress.ip_network("2001::/32"))
        )


@FAST
@given(st.text(max_size=40))
def test_parse_host_never_crashes(text: str) -> None:
    try:
        host = parse_host(text)
    except ValueError:
        return
    assert parse_host(host.name) == host  # stable


JSONISH = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-5, 70000)
    | st.floats(allow_nan=False)
    | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=20,
)
KEYS = st.sampled_from(
    [
        "services",
        "agents",
        "limits",
        "listen",
        "url",
        "auth",
        "bearer",
        "proxy",
        "paths",
        "methods",
        "allow_networks",
        "token_sha256",
        "service",
        "max_connections",
        "agent",
        "timeout",
    ]
)
CONFIGISH = st.recursive(
    JSONISH, lambda inner: st.dictionaries(KEYS, inner, max_size=5), max_leaves=25
)


@FAST
@given(CONFIGISH)
def test_config_loader_only_ever_raises_config_error(data: Any) -> None:
    try:
        load_config(yaml.safe_dump(data))
    except ConfigError as exc:
        assert all(issue.message for issue in exc.issues)


@FAST
@given(st.text(max_size=200))
def test_config_loader_survives_arbitrary_text(text: str) -> None:
    with contextlib.suppress(ConfigError):
        load_config(text)


# Pieces of paths that normalise into other text: look-alikes, case, invisible characters.
UNICODE_PIECES = st.one_of(
    PIECES,
    st.sampled_from(
        ["%EF%BC%85", "%EF%BD%81", "%C4%B1", "%C4%B0", "%C2%AD", "%E2%80%8B", "%CC%81", "A", "%41"]
    ),
)


@FAST
@given(st.lists(UNICODE_PIECES, max_size=12).map(lambda parts: "/" + "".join(parts)))
@example("/a/%EF%BD%81dmin")  # accepted: the assertions below run at least once
def test_canonical_path_folded_reading_has_no_traversal(raw: str) -> None:
    """What a decoding, NFKC-normalising, case-folding upstream reads of an accepted path has no
    dot segment and no separator inside a segment."""
    path = _canonical(raw)
    if path is None:
        return
    for segment in path.folded:
        assert segment not in (".", "..") and "/" not in segment and "\\" not in segment


FOLDABLE = st.text(alphabet="aAbB\uff41\uff21\u00ad*", min_size=1, max_size=4)


@FAST
@given(
    st.lists(st.one_of(FOLDABLE.filter(lambda s: "**" not in s), st.just("**")), max_size=4),
    st.lists(FOLDABLE.filter(lambda s: "*" not in s), max_size=5),
)
def test_glob_covers_what_it_matches_in_any_case(parts: list[str], segs: list[str]) -> None:
    """A deny glob covers every path it matches, and the same path in any case or width."""
    glob = compile_glob("/" + "/".join(parts))
    path = CanonicalPath(tuple(segs))
    if glob.matches(path):
        assert glob.covers(path)
    upper = CanonicalPath(tuple(s.upper() for s in segs))
    assert glob.covers(path) == glob.covers(upper)
