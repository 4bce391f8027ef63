"""The canary leak check itself can fail: it finds a secret wherever it is told to look."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from tests.conftest import assert_absent
from turret.echo import encodings

CANARY = b"CANARY-leak-check-0123456789"


@pytest.mark.parametrize("where", ["audit", "log", "response"])
def test_assert_absent_finds_an_encoded_canary(tmp_path: Path, where: str) -> None:
    leaked = b"prefix " + base64.b64encode(CANARY) + b" suffix"
    audit = tmp_path / "audit.jsonl"
    audit.write_bytes(leaked if where == "audit" else b"{}")
    log = leaked.decode() if where == "log" else ""
    responses = [leaked] if where == "response" else [b"clean"]
    with pytest.raises(AssertionError, match=f"secret leaked into {where}"):
        assert_absent(encodings(CANARY), audit, log, responses)


def test_assert_absent_passes_clean_places(tmp_path: Path) -> None:
    assert_absent(encodings(CANARY), tmp_path / "none.jsonl", "clean log", [b"clean"])
