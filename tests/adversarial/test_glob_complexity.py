"""Path globs against adversarial globs and paths: always the right answer, in linear work.

Work is counted, not timed: the path's segments are `str`s that tally every comparison made on
them (characters a call may examine, plus one per call and per hash), so the counts are the same
on any machine. The base code needed O(n^7) steps for `*a*a*a*a*a*a*b` against n "a"s and tried
every split of `**` (exponential in their number).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from fnmatch import fnmatchcase
from typing import SupportsIndex

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from turret.config import load_config
from turret.errors import ConfigError
from turret.paths import (
    MAX_GLOB_CHARS,
    MAX_GLOB_WILDCARDS,
    CanonicalPath,
    GlobIndex,
    compile_glob,
)


class Steps:
    """A tally of the basic steps done on the strings `Steps.path` made."""

    def __init__(self) -> None:
        self.count = 0

    def path(self, segments: list[str]) -> CanonicalPath:
        """A path whose segments count, into this tally, the work done on them."""
        steps = self

        class Counted(str):
            __slots__ = ()

            def __eq__(self, other: object, /) -> bool:
                steps.count += 1 + (min(len(self), len(other)) if isinstance(other, str) else 0)
                return str.__eq__(self, other)

            def __hash__(self) -> int:
                steps.count += 1
                return str.__hash__(self)

            def startswith(
                self,
                prefix: str | tuple[str, ...],
                start: SupportsIndex | None = None,
                end: SupportsIndex | None = None,
                /,
            ) -> bool:
                steps.count += 1 + sum(map(len, (prefix,) if isinstance(prefix, str) else prefix))
                return str.startswith(self, prefix, start, end)

            def endswith(
                self,
                suffix: str | tuple[str, ...],
                start: SupportsIndex | None = None,
                end: SupportsIndex | None = None,
                /,
            ) -> bool:
                steps.count += 1 + sum(map(len, (suffix,) if isinstance(suffix, str) else suffix))
                return str.endswith(self, suffix, start, end)

            def find(
                self,
                sub: str,
                start: SupportsIndex | None = None,
                end: SupportsIndex | None = None,
                /,
            ) -> int:
                lo, hi, _ = slice(start, end).indices(len(self))
                steps.count += 1 + max(0, hi - lo) + len(sub)
                return str.find(self, sub, start, end)

        return CanonicalPath(tuple(Counted(s) for s in segments))


def steps_of(pattern: str, segments: list[str]) -> tuple[bool, int]:
    """Whether `pattern` matches the path `segments`, and the steps that took."""
    glob = compile_glob(pattern)
    steps = Steps()
    path = steps.path(segments)
    return glob.matches(path), steps.count


def reference(parts: list[str], segs: list[str]) -> bool:
    """The plain definition: `**` takes any number of segments, others one, by fnmatchcase."""
    if not parts:
        return not segs
    head, *rest = parts
    if head == "**":
        return any(reference(rest, segs[k:]) for k in range(len(segs) + 1))
    return bool(segs) and fnmatchcase(segs[0], head) and reference(rest, segs[1:])


def parts_of(pattern: str) -> list[str]:
    return [] if pattern == "/" else pattern[1:].split("/")


MakePath = Callable[[int], tuple[list[str], int]]  # size -> segments, units of input


def assert_linear(pattern: str, make: MakePath, sizes: tuple[int, ...], per_unit: int) -> None:
    """Steps for each size stay under `per_unit` per unit of input, and doubling the input at
    most (a little over) doubles them."""
    counts = []
    for n in sizes:
        segments, units = make(n)
        _, count = steps_of(pattern, segments)
        assert count >= units  # the tally sees the work: every unit was looked at
        assert count <= per_unit * units, (n, count)
        counts.append(count)
    for small, big in itertools.pairwise(counts):
        assert big <= 2.2 * small, counts


# Each path makes the matcher look at all of it (no early exit at the ends): the worst case.
ADVERSARIAL = [
    pytest.param("/" + "*a" * 7 + "*b*", lambda n: (["a" * n], n), id="many-stars-no-match"),
    pytest.param("/" + "*a" * 7 + "*", lambda n: (["a" * n], n), id="many-stars-match"),
    pytest.param("/*ab*ab*ab*ac*", lambda n: (["ab" * n], 2 * n), id="overlapping-pieces"),
    pytest.param("/*" + "a" * 50 + "b*", lambda n: (["a" * n], n), id="long-middle-piece"),
    pytest.param("/**/a/**/a/**/a/**/b/**", lambda n: (["a"] * n, n), id="many-doublestars"),
    pytest.param("/**/a/*/**/a/*/**/c/**", lambda n: (["a", "b"] * n, 2 * n), id="runs-of-two"),
    pytest.param("/**/*a*/**/*a*/**/*b*/**", lambda n: (["xa"] * n, n), id="stars-in-runs"),
    pytest.param("/" + "**/" * 7 + "z/**", lambda n: (["a"] * n, n), id="seven-doublestars"),
    pytest.param("/**/*b*/**", lambda n: (["a" * 50] * (n // 50), n), id="long-segments-no-match"),
]


@pytest.mark.parametrize(("pattern", "make"), ADVERSARIAL)
def test_glob_work_is_linear_in_the_path(pattern: str, make: MakePath) -> None:
    """Attack: a path that makes a backtracking matcher take polynomial or exponential time."""
    assert_linear(pattern, make, (250, 500, 1000, 2000, 4000), per_unit=120)


@pytest.mark.parametrize(("pattern", "make"), ADVERSARIAL)
def test_glob_adversarial_answers_match_the_reference(pattern: str, make: MakePath) -> None:
    """The fast matcher answers exactly what the definition does, on sizes the reference can do."""
    for n in (1, 2, 3, 5, 8, 12):
        segments, _ = make(n)
        assert steps_of(pattern, segments)[0] == reference(parts_of(pattern), segments)


def test_glob_many_doublestars_find_a_late_match_linearly() -> None:
    """`**/a/**/a/**/a/**/b` against a/a/.../a/b matches, at linear cost (the old code tried
    every split of every `**`)."""
    pattern = "/**/a/**/a/**/a/**/b"
    counts = []
    for n in (1000, 2000, 4000):
        matched, count = steps_of(pattern, ["a"] * n + ["b"])
        assert matched
        counts.append(count)
    assert counts[2] <= 2.2 * counts[1] <= 2.2 * 2.2 * counts[0]


def test_glob_thousand_segment_paths() -> None:
    """1000 segments against globs of each kind: right answers, bounded work."""
    segments = [f"s{i}" for i in range(1000)]
    cases = {
        "/**": True,
        "/s0/**/s999": True,
        "/s0/**/s500/**/s999": True,
        "/**/s5*/**/s99*": True,
        "/**/s999/**/s0": False,
        "/s0/*": False,
    }
    for pattern, expected in cases.items():
        matched, count = steps_of(pattern, segments)
        assert matched is expected, pattern
        assert count <= 40 * 1000, (pattern, count)


def test_glob_index_lookup_is_linear_in_segments() -> None:
    """Attack: a path of thousands of segments against the grant index (which used to hash every
    prefix of the path: quadratic)."""
    index = GlobIndex(
        (compile_glob(p), p) for p in ("/api/v1/user", "/api/v1/repos/me/*", "/a/**", "/**/z")
    )
    counts = []
    for n in (1000, 2000, 4000):
        steps = Steps()
        found = [value for _, value in index.matching(steps.path(["a"] * n))]
        assert found == ["/a/**"]
        counts.append(steps.count)
    assert counts[1] <= 2.2 * counts[0] and counts[2] <= 2.2 * counts[1], counts


PIECE = st.text(alphabet="ab", max_size=3)
SEGMENT_GLOB = (
    st.lists(PIECE, min_size=1, max_size=4)
    .map("*".join)
    .filter(lambda s: s != "" and "**" not in s)
)


@settings(max_examples=500, deadline=None)
@given(
    st.lists(st.one_of(SEGMENT_GLOB, st.just("**")), max_size=6),
    st.lists(st.text(alphabet="ab", min_size=1, max_size=5), max_size=7),
)
def test_glob_matches_like_the_definition(parts: list[str], segs: list[str]) -> None:
    """Any glob over a/b/`*`/`**` against any path of a/b segments: the definition's answer."""
    pattern = "/" + "/".join(parts)
    assume(pattern.count("*") <= MAX_GLOB_WILDCARDS)  # more is refused at load (tested below)
    glob = compile_glob(pattern)
    assert glob.matches(CanonicalPath(tuple(segs))) == reference(parts, segs)


@pytest.mark.parametrize(
    ("pattern", "problem"),
    [
        ("/" + "a" * MAX_GLOB_CHARS, f"longer than {MAX_GLOB_CHARS}"),
        ("/" + "*a" * (MAX_GLOB_WILDCARDS + 1), f"more than {MAX_GLOB_WILDCARDS}"),
        ("/" + "/".join(["**"] * 9), f"more than {MAX_GLOB_WILDCARDS}"),
    ],
)
def test_glob_oversized_globs_refused_at_load(pattern: str, problem: str) -> None:
    """A glob whose matching cost would be large is a config error naming its key path."""
    config = f"""
services:
  s: {{url: "http://127.0.0.1:1", auth: {{bearer: t}}}}
agents:
  a:
    token_sha256: "{"0" * 64}"
    proxy: [{{service: s, methods: [GET], paths: ["/ok", "{pattern}"]}}]
"""
    with pytest.raises(ConfigError) as info:
        load_config(config)
    assert "agents.a.proxy[0].paths[1]" in str(info.value)
    assert problem in str(info.value)


def test_glob_bounds_allow_ordinary_globs() -> None:
    """Globs at the bounds still compile."""
    compile_glob("/" + "a" * (MAX_GLOB_CHARS - 1))
    compile_glob("/" + "/".join(["*"] * MAX_GLOB_WILDCARDS))
