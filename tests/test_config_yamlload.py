"""The strict YAML reader on libyaml: the same data as PyYAML's safe loader for plain YAML, every
tag, anchor and alias refused wherever it stands (keys too), lines kept, and as fast as
`yaml.load(..., Loader=yaml.CSafeLoader)`."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.extras import _agents_yaml
from turret.config.yamlload import MAX_DEPTH, read_yaml
from turret.errors import YamlError

KEYS = st.text(st.characters(codec="utf-8", exclude_categories=["Cs", "Cc"]), max_size=8)
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text(st.characters(codec="utf-8", exclude_categories=["Cs", "Cc"]), max_size=12)
)
PLAIN = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(KEYS, inner, max_size=4),
    max_leaves=20,
)


def _issues(text: str) -> list[tuple[str, int | None, str]]:
    with pytest.raises(YamlError) as info:
        read_yaml(text)
    return [(i.path, i.line, i.message) for i in info.value.issues]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(PLAIN, st.booleans())
def test_read_yaml_reads_what_pyyaml_reads(data: object, flow: bool) -> None:
    """Differential: any plain document, block or flow style, reads as PyYAML's SafeLoader."""
    text = yaml.safe_dump(data, default_flow_style=flow, allow_unicode=True)
    assert read_yaml(text).data == yaml.load(text, Loader=yaml.SafeLoader)


def test_read_yaml_lines_of_keys_and_items() -> None:
    doc = read_yaml("a:\n  b: 1\n  c:\n    - x\n    -\n      d: 2\n")
    assert doc.lines == {"": 1, "a": 1, "a.b": 2, "a.c": 3, "a.c[0]": 4, "a.c[1]": 6, "a.c[1].d": 6}
    assert doc.line_of("a.c[1].d.nowhere") == 6


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("!!str a: 1\n", ("", 1, "YAML tags are not allowed")),
        ("x: 1\n&k a: 1\n", ("", 2, "YAML anchors and aliases are not allowed")),
        ("a: {!!python/name:os.system : 1}\n", ("a", 1, "YAML tags are not allowed")),
        ("- !custom [1]\n", ("[0]", 1, "YAML tags are not allowed")),
        ("a: ! x\n", ("a", 1, "YAML tags are not allowed")),
        ("--- !!map\na: 1\n", ("", 1, "YAML tags are not allowed")),
        ("a: !!binary aGVsbG8=\n", ("a", 1, "YAML tags are not allowed")),
    ],
    ids=["tagged-key", "anchored-key", "python-key", "custom-tag", "bare-tag", "root", "binary"],
)
def test_read_yaml_refuses_tags_and_anchors_anywhere(
    text: str, expected: tuple[str, int, str]
) -> None:
    """A tag or anchor on a key is refused like one on a value (a key is never constructed)."""
    assert _issues(text) == [expected]


def test_read_yaml_each_alias_is_reported_at_its_own_line() -> None:
    issues = _issues("a: &x [1, 2]\nb: *x\nc:\n  - *x\n")
    assert [(p, line) for p, line, _ in issues] == [("a", 1), ("b", 2), ("c[0]", 4)]


def test_read_yaml_refused_collection_is_not_reported_inside() -> None:
    """What a refused node holds is never built, so its contents raise nothing of their own."""
    assert _issues("a: !t {b: !!str c, b: 2}\n") == [("a", 1, "YAML tags are not allowed")]


@pytest.mark.parametrize(
    ("text", "problem", "line"),
    [
        ("a: *nowhere\n", "found undefined alias 'nowhere'", 1),
        ("a: &x 1\nb: &x 2\n", "second occurrence", 2),
        ("a: 1\n---\nb: 2\n", "but found another document", 2),
        ("a: !t [" + "[" * MAX_DEPTH + "]" * MAX_DEPTH + "]\n", "nested deeper than 32", 1),
        ("a: =\n", "could not determine a constructor", 1),
        ("<<: {a: 1}\n", "could not determine a constructor", 1),
        ("a: 1\nb: [x\n", "not valid YAML", 3),
    ],
)
def test_read_yaml_composer_errors_keep_their_line(text: str, problem: str, line: int) -> None:
    [(path, at, message)] = _issues(text)
    assert (path, at) == ("", line) and message.startswith("not valid YAML") and problem in message


def test_read_yaml_depth_limit_is_exact() -> None:
    ok = "[" * (MAX_DEPTH - 1) + "]" * (MAX_DEPTH - 1)
    assert read_yaml(ok).data is not None
    deep = "[" * MAX_DEPTH + "1" + "]" * MAX_DEPTH
    assert "nested deeper" in _issues(deep)[0][2]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a: 1\na: 2\n", "duplicate key"),
        ("1: x\n", "key 1 must be a string"),
        ("? [a, b]\n: c\n", "key ['a', 'b'] must be a string"),
        ("null: x\n", "key None must be a string"),
    ],
)
def test_read_yaml_bad_keys(text: str, message: str) -> None:
    assert message in [m for _, _, m in _issues(text)]


@pytest.mark.parametrize("text", ["a: \x07\n", "a: b\x00\n", "a: \ud800\n", "a: \x1b[31m\n"])
def test_read_yaml_refuses_characters_no_config_holds(text: str) -> None:
    [(_, _, message)] = _issues(text)
    assert message.startswith("not valid YAML")


def test_read_yaml_empty_and_comment_only_streams_are_empty() -> None:
    assert read_yaml("").data is None
    assert read_yaml("# nothing\n").data is None


def _best_of(runs: int, work: Callable[[], object]) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return min(times)


def test_read_yaml_is_as_fast_as_the_c_safe_loader() -> None:
    """Issue 17: the strict reader of a 2,000-agent config within 1.5x a bare CSafeLoader load."""
    text = _agents_yaml(2000)
    bare = _best_of(3, lambda: yaml.load(text, Loader=yaml.CSafeLoader))
    strict = _best_of(3, lambda: read_yaml(text))
    assert strict <= 1.5 * bare, (strict, bare)
