"""The fuzz target's seed corpus runs as a quick test, so the target stays importable and sound."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

FUZZ = Path(__file__).parent.parent / "fuzz"


def _target() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fuzz_paths", FUZZ / "fuzz_paths.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    "seed", sorted((FUZZ / "corpus" / "paths").iterdir()), ids=lambda p: p.name
)
def test_fuzz_seed_corpus_holds_invariants(seed: Path) -> None:
    _target().test_one_input(seed.read_bytes())
