"""The bridge as a plain subprocess, for the start checks and the HTTP transport."""

from __future__ import annotations

import asyncio
import os
import sys
from dataclasses import dataclass, field

import anyio

from tests.mcp.conftest import ROOT

DEADLINE = 20.0  # seconds; a loaded machine starts Python slowly


@dataclass
class Bridge:
    """A running `turret mcp`, its stderr collected line by line."""

    proc: asyncio.subprocess.Process
    lines: list[str] = field(default_factory=list)

    async def line_with(self, fragment: str) -> str:
        """The first stderr line containing `fragment` (read as they come)."""
        assert self.proc.stderr is not None
        with anyio.fail_after(DEADLINE):
            while True:
                raw = await self.proc.stderr.readline()
                if not raw:
                    raise AssertionError(f"stderr ended without {fragment!r}: {self.lines}")
                self.lines.append(raw.decode())
                if fragment in self.lines[-1]:
                    return self.lines[-1]

    async def finish(self) -> int:
        """Wait for exit; the rest of stderr is collected."""
        with anyio.fail_after(DEADLINE):
            _, err = await self.proc.communicate()
        self.lines.append(err.decode())
        assert self.proc.returncode is not None
        return self.proc.returncode

    @property
    def stderr(self) -> str:
        return "".join(self.lines)


async def spawn(args: list[str], env: dict[str, str]) -> Bridge:
    """`python -m turret mcp ...` with exactly `env` added to a token-free environment."""
    dropped = ("TURRET_TOKEN", "CREDENTIALS_DIRECTORY")
    base = {k: v for k, v in os.environ.items() if k not in dropped}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**base, **env},
        cwd=ROOT,
    )
    return Bridge(proc)
