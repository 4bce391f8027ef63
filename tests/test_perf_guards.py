"""The hot-path changes of issue 17 keep every guarantee: remembered tokens are guarded in every
form however many there are, one search over several guards finds what each would, and audit
lines are byte for byte what `json.dumps` wrote."""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from turret.audit import LineSink
from turret.echo import Redactor, found_by_any
from turret.exfil import GENERATION, TokenGuard, carries
from turret.records import MAX_FIELD_CHARS, clean

FORMS: dict[str, Callable[[str], bytes]] = {
    "raw": lambda v: v.encode(),
    "base64": lambda v: base64.b64encode(v.encode()),
    "hex-upper": lambda v: v.encode().hex().upper().encode(),
    "utf-16-le": lambda v: v.encode("utf-16-le"),
    "url": lambda v: v.replace("-", "%2D").encode(),
    "json-escaped": lambda v: json.dumps(v).replace("a", "\\u0061").encode(),
}


def _legacy(i: int) -> str:
    """A token that does not have Turret's token shape: only remembering guards it."""
    return f"legacy-agent-secret-{i:04d}-{'q' * 12}"


@pytest.mark.parametrize("count", [1, 2, 3, GENERATION - 1, GENERATION, GENERATION + 1, 150])
def test_token_guard_every_remembered_token_is_guarded(count: int) -> None:
    """Across generation merges (binary counter) and past the largest generation."""
    guard = TokenGuard()
    for i in range(count):
        guard.remember(_legacy(i))
    for i in {0, count // 2, count - 1}:
        for how, form in FORMS.items():
            assert guard.redactor.found(b"x=" + form(_legacy(i)) + b";"), (i, how)
    assert not guard.redactor.found(_legacy(count).encode())  # never presented
    clean_text, n = guard.redactor.redact(b"a " + _legacy(count - 1).encode() + b" b")
    assert (clean_text, n) == (b"a [REDACTED] b", 1)


def test_token_guard_random_part_alone_is_guarded() -> None:
    guard = TokenGuard()
    tokens = [f"turret_{'A' * 20}{i:023d}" for i in range(GENERATION + 3)]
    for t in tokens:
        guard.remember(t)
    for t in (tokens[0], tokens[-1]):
        assert guard.redactor.found(base64.b64encode(t.removeprefix("turret_").encode()))


def test_token_guard_remembering_again_changes_nothing() -> None:
    guard = TokenGuard()
    guard.remember(_legacy(1))
    before = guard.redactor
    guard.remember(_legacy(1))
    assert guard.redactor is before


VALUES = st.text(st.characters(codec="utf-8", categories=["L", "N", "P"]), min_size=12, max_size=24)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(VALUES, min_size=0, max_size=3), VALUES, st.binary(max_size=40), st.booleans())
def test_found_by_any_finds_what_each_guard_finds(
    values: list[str], other: str, around: bytes, present: bool
) -> None:
    """Differential: one pass over the views finds a value iff one of the guards alone would."""
    guards = (Redactor(values), Redactor([other]), TokenGuard().redactor)
    secret = (values or [other])[0]
    data = around + (base64.b64encode(secret.encode()) if present else b"") + around
    expected = any(g.found(data) for g in guards)
    assert found_by_any(data, guards) is expected
    assert carries(data, guards) is expected
    if present:
        assert expected


def test_found_by_any_empty_data_or_no_guards() -> None:
    assert not found_by_any(b"", (Redactor(["CANARY-0123456789"]), TokenGuard().redactor))
    assert not found_by_any(b"CANARY-0123456789", ())
    assert not found_by_any(b"CANARY-0123456789", (Redactor([]),))


@pytest.mark.parametrize(
    "value",
    ["plain", "é unicode ☃", 'quote " and \\ backslash', 42, 1.5, "x" * 600, "tab\there\x1b[31m"],
)
def test_clean_matches_its_definition(value: object) -> None:
    text = str(value)
    text = "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text)
    if len(text) > MAX_FIELD_CHARS:
        text = text[:MAX_FIELD_CHARS] + "...[truncated]"
    assert clean(value) == text


def test_line_sink_writes_what_json_dumps_wrote(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    sink = LineSink.open(str(path))
    fields = {"TURRET_PATH": '/é/"q"/\\', "TURRET_STATUS": "200", "MESSAGE_ID": "x" * 32}
    sink.write("agent: allow - ☃", fields)
    os.close(sink._fd)
    line = path.read_bytes()
    record = json.loads(line)
    expected = {"ts": record["ts"], "MESSAGE": "agent: allow - ☃", **fields}
    assert line == (json.dumps(expected, ensure_ascii=True, separators=(",", ":")) + "\n").encode()
