"""Fuzz target for the request path: target splitting, canonicalisation and the grant check.

Run on demand with `make fuzz` (atheris, coverage-guided). `test_one_input` checks the same
invariants as the property tests; it is importable without atheris, so the seed corpus also runs
as a quick test in `make test`.
"""

from __future__ import annotations

import posixpath
import sys
from urllib.parse import unquote

from turret.errors import BadRequest
from turret.model import Agent, ProxyGrant
from turret.paths import canonical_path, compile_glob
from turret.pipeline.proxy import split_target
from turret.policy import decide_proxy

AGENT = Agent(
    "fuzz",
    "0" * 64,
    None,
    (
        ProxyGrant("gitea", frozenset({"GET"}), (compile_glob("/api/v1/repos/me/*"),)),
        ProxyGrant("gitea", frozenset({"GET"}), (compile_glob("/api/v1/repos/me/*/issues/**"),)),
    ),
)


def test_one_input(data: bytes) -> None:
    """One fuzz case: any bytes as a raw request target under /v1/proxy/."""
    target = "/v1/proxy/" + data.decode("latin-1")
    try:
        service, raw_path, _ = split_target(target)
        path = canonical_path(raw_path)
    except BadRequest:
        return
    assert canonical_path(path.encoded) == path, "canonical form is not stable"
    decision = decide_proxy(AGENT, service, "GET", path)
    if not decision.allowed:
        return
    assert service == "gitea"
    assert path.segments[:4] == ("api", "v1", "repos", "me"), path.encoded
    decoded = path.encoded
    for _ in range(3):
        decoded = unquote(decoded)
        assert posixpath.normpath(decoded).startswith("/api/v1/repos/me/"), path.encoded


def main() -> None:
    """Run under atheris: `python fuzz/fuzz_paths.py [libFuzzer options] CORPUS_DIR...`."""
    import atheris  # type: ignore[import-untyped,import-not-found,unused-ignore]  # noqa: PLC0415 - fuzz extra only

    atheris.instrument_all()
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
