"""`turret serve` of a plain proxy config imports none of the optional features' libraries: they
cost start-up time and idle memory (issue 17), and only a config that uses them may load them.
A real process, a real request through it, and the interpreter's own import log."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from pathlib import Path

import aiohttp

from tests.conftest import Upstream, config_text
from tests.gateway import Canaries
from turret.auth import new_token

ROOT = Path(__file__).resolve().parent.parent
# What only some configs need: AWS signing, GitHub App JWTs, MCP (and the web stack its server
# brings), metrics. The lead keeps this list in step with the features that land.
LAZY = (
    "botocore",
    "boto3",
    "jwt",
    "cryptography",
    "mcp",
    "uvicorn",
    "starlette",
    "pydantic",
    "prometheus_client",
    "httpx",
    "anyio",
)


def imported(stderr: str) -> set[str]:
    """Module names from `python -X importtime` output."""
    names = set()
    for line in stderr.splitlines():
        if line.startswith("import time:") and line.count("|") == 2:
            name = line.rsplit("|", 1)[1].strip()
            if name != "imported package":
                names.add(name)
    return names


async def _answered(sock: Path, token: str, proc: asyncio.subprocess.Process) -> int:
    """The status of a proxied request, once the socket takes connections."""
    connector = aiohttp.UnixConnector(path=str(sock))
    async with aiohttp.ClientSession(connector=connector) as session:
        for _ in range(600):  # polled, up to ~30 s: start-up under load is slow
            if proc.returncode is not None:
                raise AssertionError("turret serve exited")
            try:
                async with session.get(
                    "http://turret/v1/proxy/gitea/api/v1/user",
                    headers={"Authorization": f"Bearer {token}"},
                ) as resp:
                    return resp.status
            except aiohttp.ClientConnectionError:
                await asyncio.sleep(0.05)
    raise AssertionError("turret serve did not answer")


async def test_serve_plain_config_imports_no_optional_library(
    tmp_path: Path,
    upstream: Upstream,
    canary_set: Canaries,
    creds_dir: Path,
    no_leaks_in: Callable[[str], None],
) -> None:
    token = new_token()
    canary_set.tokens.append(token)
    sock = tmp_path / "turret.sock"
    config = tmp_path / "turret.yaml"
    config.write_text(f'listen: ["unix:{sock}"]\n' + config_text(upstream.url, token, new_token()))
    audit = tmp_path / "audit.jsonl"
    argv = [sys.executable, "-X", "importtime", "-m", "turret", "serve", "--config", str(config)]
    argv += ["--credentials-dir", str(creds_dir), "--audit-file", str(audit)]
    # To files: the import log is larger than a pipe holds unread.
    with (tmp_path / "out").open("wb") as out_f, (tmp_path / "err").open("wb") as err_f:
        proc = await asyncio.create_subprocess_exec(*argv, cwd=ROOT, stdout=out_f, stderr=err_f)
    try:
        status = await _answered(sock, token, proc)
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 30)
    out, err = (tmp_path / "out").read_text(), (tmp_path / "err").read_text()
    assert status == 200, err[-2000:]
    names = imported(err)
    assert "turret.server" in names and "aiohttp" in names  # the log is what it should be
    loaded = sorted(n for n in names if n.split(".")[0] in LAZY)
    assert loaded == [], loaded
    no_leaks_in(out + err + audit.read_text())
