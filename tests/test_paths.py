"""Path canonicalisation and globs, as pure functions."""

from __future__ import annotations

import pytest

from turret.errors import BadRequest
from turret.paths import canonical_path, compile_glob


def test_canonical_path_root() -> None:
    assert canonical_path("/").segments == () and canonical_path("/").encoded == "/"


def test_canonical_path_is_stable() -> None:
    for raw in ("/a/%7Eb/c%20d", "/caf%C3%A9/x;y", "/a+b/%2B", "/:@!$&'()*,="):
        once = canonical_path(raw).encoded
        assert canonical_path(once).encoded == once


@pytest.mark.parametrize("raw", ["", "a/b", "http://x/a", "*"])
def test_canonical_path_needs_a_leading_slash(raw: str) -> None:
    with pytest.raises(BadRequest):
        canonical_path(raw)


@pytest.mark.parametrize(
    ("pattern", "path", "matches"),
    [
        ("/api/v1/user", "/api/v1/user", True),
        ("/api/v1/user", "/api/v1/users", False),
        ("/repos/me/*", "/repos/me/x", True),
        ("/repos/me/*", "/repos/me/x/y", False),
        ("/repos/me/*", "/repos/me", False),
        ("/repos/me/*/issues/**", "/repos/me/x/issues", True),
        ("/repos/me/*/issues/**", "/repos/me/x/issues/1/comments", True),
        ("/repos/me/*/issues/**", "/repos/me/x/pulls/1", False),
        ("/**", "/", True),
        ("/**", "/a/b/c", True),
        ("/a/*.json", "/a/x.json", True),
        ("/a/*.json", "/a/x.yaml", False),
        ("/a/**/z", "/a/z", True),
        ("/a/**/z", "/a/b/c/z", True),
        ("/a/**/z", "/a/b/c/y", False),
        ("/a/b%2Fc", "/a/b%252Fc", False),
    ],
)
def test_glob_matches(pattern: str, path: str, matches: bool) -> None:
    try:
        canonical = canonical_path(path)
    except BadRequest:
        assert not matches
        return
    assert compile_glob(pattern).matches(canonical) is matches


def test_glob_matches_decoded_segments() -> None:
    assert compile_glob("/rooms/!ops:example.org").matches(
        canonical_path("/rooms/%21ops%3Aexample.org")
    )


@pytest.mark.parametrize("pattern", ["", "api", "/a//b", "/a**", "/a/../b", "/./x"])
def test_compile_glob_rejects_malformed(pattern: str) -> None:
    with pytest.raises(ValueError, match=r"."):
        compile_glob(pattern)
