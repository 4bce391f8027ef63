"""Fixtures of the e2e tests: the root filesystem and venv (built once per session; cached
locally, from scratch and removed afterwards under CI) and one booted machine per test module."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.nspawn_machine import (
    REPO,
    SRC_IN_MACHINE,
    VENV_IN_MACHINE,
    booted,
    log,
    missing_prerequisites,
    rootfs,
    venv,
)
from tests.e2e.site import CANARIES, Site, install, start_upstream


@pytest.fixture(scope="session")
def e2e_image(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    """The root filesystem and the venv every e2e machine boots from."""
    missing = missing_prerequisites()
    if missing:
        message = "cannot boot a systemd container here; missing: " + ", ".join(missing)
        if os.environ.get("CI"):
            pytest.fail(message)  # CI must run this test, never skip it
        pytest.skip(message)
    fresh = bool(os.environ.get("CI"))
    default_cache = Path.home() / ".cache" / "turret-e2e"
    cache = (
        tmp_path_factory.mktemp("e2e-build")
        if fresh
        else Path(os.environ.get("TURRET_E2E_CACHE", default_cache))
    )
    started = time.monotonic()
    image = rootfs(cache), venv(cache)
    log(f"root filesystem and venv ready after {time.monotonic() - started:.1f} s ({cache})")
    try:
        yield image
    finally:
        if fresh:
            shutil.rmtree(cache, ignore_errors=True)


@pytest.fixture(scope="module")
def site(
    e2e_image: tuple[Path, Path],
    tmp_path_factory: pytest.TempPathFactory,
    request: pytest.FixtureRequest,
) -> Iterator[Site]:
    """A machine of this module's own, booted, with Turret installed and the fake upstream up;
    at the end, no canary in its whole journal."""
    root, env = e2e_image
    started = time.monotonic()
    run = tmp_path_factory.mktemp("e2e-run")
    etc = run / "etc-turret"
    (etc / "credentials").mkdir(parents=True)
    binds = [
        (env, VENV_IN_MACHINE, True),
        (REPO / "turret", f"{SRC_IN_MACHINE}/turret", True),
        (etc, "/etc/turret", False),
    ]
    name = f"turret-e2e-{os.getpid()}-{request.module.__name__.rsplit('.', 1)[-1][-12:]}"
    with booted(name.replace("_", "-"), root, binds, run / "console.log") as machine:
        log(f"booted after {time.monotonic() - started:.1f} s")
        s = Site(machine, etc)
        upstream = start_upstream(machine)
        try:
            s.upstream_port = int(upstream.stdout.readline()) if upstream.stdout else 0
            install(s)
            yield s
            journal = machine.run("journalctl", "--no-pager", "-o", "json").stdout
            for canary in CANARIES:
                assert canary not in journal
        finally:
            upstream.kill()
            upstream.communicate()
            log(f"done after {time.monotonic() - started:.1f} s")
