"""`turret serve` as a real process with `audit.chain_key`: the chain over its audit file holds
across a clean restart and a crash (SIGKILL), `turret audit head` on the admin socket names the
last record, and `turret audit verify --file` passes the real trail and finds a record removed
from a copy. No key, credential or token in any output."""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import socket
import sys
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import Upstream, config_text
from tests.gateway import Canaries

WAIT = 15.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Process:
    """One Turret directory (config, credentials, state, audit file) and its process."""

    dir: Path
    creds: Canaries
    token: str
    port: int
    admin_socket: str
    proc: asyncio.subprocess.Process | None = None
    outputs: list[str] = field(default_factory=list)

    @property
    def audit_file(self) -> Path:
        return self.dir / "audit.jsonl"

    @property
    def key_file(self) -> Path:
        return self.dir / "creds" / "chain-key"

    def records(self) -> list[dict[str, str]]:
        text = self.audit_file.read_text() if self.audit_file.exists() else ""
        return [json.loads(line) for line in text.splitlines()]

    async def start(self) -> None:
        starts = sum(r["TURRET_EVENT"] == "started" for r in self.records())
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "turret", "serve", "--config", str(self.dir / "turret.yaml"),
            "--credentials-dir", str(self.dir / "creds"), "--audit-file", str(self.audit_file),
            "--state-dir", str(self.dir / "state"), "--admin-socket", self.admin_socket,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        async with asyncio.timeout(WAIT):
            # The process writes `started` once it listens; there is nothing else to wait on.
            while sum(r["TURRET_EVENT"] == "started" for r in self.records()) == starts:
                assert self.proc.returncode is None, "turret serve exited"
                await asyncio.sleep(0.02)

    async def stop(self, sig: signal.Signals = signal.SIGTERM) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        async with asyncio.timeout(WAIT):
            _, err = await self.proc.communicate()
        self.outputs.append(err.decode())
        assert self.proc.returncode is not None
        return self.proc.returncode

    async def request(self, path: str) -> int:
        async with (
            aiohttp.ClientSession() as session,
            session.get(
                f"http://127.0.0.1:{self.port}/v1/proxy/gitea{path}",
                headers={"Authorization": f"Bearer {self.token}"},
            ) as resp,
        ):
            self.outputs.append(await resp.text())
            return resp.status

    async def cli(self, *args: str) -> tuple[int, str, str]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "turret", *args,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await proc.communicate()
        self.outputs += [out.decode(), err.decode()]
        assert proc.returncode is not None
        return proc.returncode, out.decode(), err.decode()

    async def verify(self, *args: str, file: Path | None = None) -> tuple[int, str, str]:
        return await self.cli(
            "audit", "verify", "--file", str(file or self.audit_file),
            "--key-file", str(self.key_file), *args,
        )  # fmt: skip


@pytest.fixture
async def turret(
    upstream: Upstream, leak_check: Canaries, tmp_path: Path
) -> AsyncIterator[Process]:
    token, other = leak_check.mint(), leak_check.mint()
    port = free_port()
    sockets = Path(tempfile.mkdtemp(prefix="turret-chain-"))
    (tmp_path / "turret.yaml").write_text(
        config_text(upstream.url, token, other)
        + f"listen: ['127.0.0.1:{port}']\naudit: {{chain_key: chain-key}}\n"
    )
    leak_check.write(tmp_path / "creds")
    (tmp_path / "state").mkdir(mode=0o700)
    p = Process(tmp_path, leak_check, token, port, str(sockets / "admin.sock"))
    yield p
    if p.proc is not None and p.proc.returncode is None:
        await p.stop(signal.SIGKILL)
    key = leak_check.credentials["chain-key"]
    texts = [*p.outputs, p.audit_file.read_text()]
    assert not any(key in t for t in texts)
    leak_check.assert_absent([("outputs", "\n".join(p.outputs)), ("audit", texts[-1])])
    shutil.rmtree(sockets, ignore_errors=True)


async def test_serve_chain_holds_across_a_clean_restart_and_head_names_the_last_record(
    turret: Process,
) -> None:
    await turret.start()
    assert await turret.request("/api/v1/user") == 200
    assert await turret.request("/forbidden") == 403
    status, out, _ = await turret.cli("audit", "head", "--admin-socket", turret.admin_socket)
    last = turret.records()[-1]
    assert (status, out.strip()) == (0, f"{last['TURRET_SEQ']}:{last['TURRET_CHAIN']}")
    published = out.strip()
    assert await turret.stop() == 0
    await turret.start()
    assert await turret.request("/api/v1/user") == 200
    assert await turret.stop() == 0

    events = [r["TURRET_EVENT"] for r in turret.records()]
    assert events[0] == "chain_started" and "chain_resumed" in events
    seqs = [int(r["TURRET_SEQ"]) for r in turret.records()]
    assert seqs == list(range(1, len(seqs) + 1))  # a clean stop: no seq skipped
    status, out, err = await turret.verify("--head", published)
    assert (status, err) == (0, ""), out
    assert out.startswith(f"OK: {len(seqs)} chained record(s) verified (seq 1..{len(seqs)})")


async def test_serve_chain_continues_after_a_crash_and_verify_finds_a_removed_record(
    turret: Process,
) -> None:
    await turret.start()
    for _ in range(3):
        assert await turret.request("/api/v1/user") == 200
    assert await turret.stop(signal.SIGKILL) == -signal.SIGKILL
    await turret.start()
    assert await turret.request("/api/v1/user") == 200
    assert await turret.stop() == 0

    resumed = next(r for r in turret.records() if r["TURRET_EVENT"] == "chain_resumed")
    assert resumed["TURRET_CHAIN_CLEAN"] == "no" and resumed["PRIORITY"] == "4"
    status, out, _ = await turret.verify()
    assert status == 0 and "1 restart(s) after an unclean stop crossed" in out

    lines = turret.audit_file.read_text().splitlines(keepends=True)
    copy = turret.dir / "copy.jsonl"
    copy.write_text("".join(lines[:2] + lines[3:]))  # the third record removed
    status, out, _ = await turret.verify(file=copy)
    assert status == 1 and out.startswith("TAMPERED at record 3: seq 3 missing before seq 4")
    status, out, _ = await turret.verify("--json", file=copy)
    doc = json.loads(out)
    assert (status, doc["ok"], doc["problem"]["seq"], doc["verified"]) == (1, False, 4, 2)


async def test_serve_head_without_a_chain_is_refused(
    turret: Process,
) -> None:
    config = turret.dir / "turret.yaml"
    config.write_text(config.read_text().replace("audit: {chain_key: chain-key}\n", ""))
    await turret.start()
    status, _, err = await turret.cli("audit", "head", "--admin-socket", turret.admin_socket)
    assert status == 1 and "audit.chain_key is not configured" in err
    assert await turret.stop() == 0
    assert "TURRET_SEQ" not in turret.audit_file.read_text()


async def test_serve_hostile_request_values_reach_turret_audit_escaped(turret: Process) -> None:
    await turret.start()
    hostile = "/%1b%5b2J%1b%5d0;owned%07%e2%80%ae%c2%9b31m%0d%0aFAKE"
    assert 400 <= await turret.request(hostile) < 500
    assert await turret.stop() == 0
    status, out, _ = await turret.cli("audit", "--file", str(turret.audit_file), "-n", "0")
    assert status == 0
    assert all(c == "\n" or (c.isprintable() and c not in "\u202e\x9b") for c in out), repr(out)
    assert "FAKE" in out and not any(line.startswith("FAKE") for line in out.splitlines())
    status, out, _ = await turret.verify()
    assert status == 0
