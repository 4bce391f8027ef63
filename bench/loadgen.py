"""Load generators: an open-loop generator at a fixed rate (latency), and wrk (saturation).

wrk is closed-loop: each connection sends its next request only when the previous answer is in,
so a slow response delays the requests that should have followed it and they are never measured
("coordinated omission"). That is right for "how many requests per second at most", and wrong for
"what latency does a client see at 500 requests/s". For the latter this module sends requests on
a fixed schedule whatever the server does, from as many keep-alive connections as needed, and
times each from the moment its bytes are written. How late each send was against the schedule is
recorded too: a late generator would show there, not hide in the latency figures.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench.procs import Procs, check_loopback

WRK_SCRIPT = Path(__file__).with_name("wrk.lua")
WRK_MARKER = "BENCH_JSON "


@dataclass(frozen=True)
class Call:
    """One request of the mix: method, path (with query) on the target, JSON body."""

    method: str
    path: str
    body: bytes = b""


@dataclass
class RateResult:
    """What the open-loop generator saw: latencies and send lags in ms, failures by kind."""

    latencies_ms: list[float] = field(default_factory=list)
    lags_ms: list[float] = field(default_factory=list)
    failures: dict[str, int] = field(default_factory=dict)
    leaks: int = 0  # responses that contained a canary credential value

    def fail(self, kind: str) -> None:
        self.failures[kind] = self.failures.get(kind, 0) + 1

    @property
    def failed(self) -> int:
        return sum(self.failures.values())


def raw_request(call: Call, port: int, authorization: str) -> bytes:
    """The HTTP/1.1 bytes of `call` with keep-alive."""
    head = [
        f"{call.method} {call.path} HTTP/1.1",
        f"Host: 127.0.0.1:{port}",
        f"Authorization: {authorization}",
    ]
    if call.body or call.method in ("POST", "PUT", "PATCH"):
        head += ["Content-Type: application/json", f"Content-Length: {len(call.body)}"]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + call.body


class Connection:
    """One keep-alive client connection that sends a request and reads one whole response."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> Connection:
        reader, writer = await asyncio.open_connection(check_loopback("127.0.0.1"), port)
        return cls(reader, writer)

    async def exchange(self, request: bytes) -> tuple[int, bytes, bool]:
        """Send `request`; the status, the body and whether the connection may be reused."""
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if headers.get("transfer-encoding", "").lower() == "chunked":
            body = await self._chunked()
        else:
            body = await self.reader.readexactly(int(headers.get("content-length", "0")))
        return status, body, headers.get("connection", "").lower() != "close"

    async def _chunked(self) -> bytes:
        parts = []
        while True:
            size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
            data = await self.reader.readexactly(size + 2)
            parts.append(data[:size])
            if size == 0:
                return b"".join(parts)

    def close(self) -> None:
        self.writer.close()


async def open_loop(
    port: int,
    requests: Sequence[bytes],
    rate: float,
    duration: float,
    *,
    canaries: Sequence[bytes] = (),
    warm_connections: int = 8,
) -> RateResult:
    """Send `requests` (cycled) to 127.0.0.1:`port` at `rate` per second for `duration` s."""
    result = RateResult()
    idle = [await Connection.open(port) for _ in range(warm_connections)]
    loop = asyncio.get_running_loop()

    async def one(request: bytes, due: float) -> None:
        conn = idle.pop() if idle else None
        try:
            if conn is None:
                conn = await Connection.open(port)
            sent = loop.time()
            status, body, reusable = await conn.exchange(request)
            done = loop.time()
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as e:
            result.fail(type(e).__name__)
            if conn is not None:
                conn.close()
            return
        result.latencies_ms.append((done - sent) * 1000)
        result.lags_ms.append(max(0.0, sent - due) * 1000)
        if not 200 <= status < 300:
            result.fail(f"HTTP {status}")
        if any(c in body for c in canaries):
            result.leaks += 1
        if reusable:
            idle.append(conn)
        else:
            conn.close()

    tasks = set()
    start = loop.time() + 0.01
    for i in range(int(rate * duration)):
        due = start + i / rate
        if due > loop.time():
            await asyncio.sleep(due - loop.time())
        task = asyncio.create_task(one(requests[i % len(requests)], due))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    if tasks:
        await asyncio.wait(tasks, timeout=30)
    for conn in idle:
        conn.close()
    return result


@contextlib.asynccontextmanager
async def held_connections(port: int, request: bytes, count: int) -> AsyncIterator[int]:
    """Open `count` keep-alive connections, one answered request each; hold them open inside.

    Yields how many connections got a 2xx answer.
    """
    conns: list[Connection] = []
    ok = 0

    async def one() -> bool:
        conn = await Connection.open(port)
        conns.append(conn)
        status, _, _ = await conn.exchange(request)
        return 200 <= status < 300

    try:
        for start in range(0, count, 100):
            batch = [one() for _ in range(min(100, count - start))]
            results = await asyncio.gather(*batch, return_exceptions=True)
            ok += sum(1 for r in results if r is True)
        yield ok
    finally:
        for conn in conns:
            conn.close()


@dataclass(frozen=True)
class SaturationResult:
    """wrk's summary: throughput, latency percentiles in ms, failures."""

    rps: float
    requests: int
    p50_ms: float
    p99_ms: float
    p999_ms: float
    failed: int


def write_wrk_script(path: Path, calls: Sequence[Call], authorization: str) -> Path:
    """A wrk Lua script that cycles through `calls` and prints its summary as JSON."""
    mix = ", ".join(
        f"{{method = {_lua_string(c.method)}, path = {_lua_string(c.path)}, "
        f"body = {_lua_string(c.body.decode())}}}"
        for c in calls
    )
    text = WRK_SCRIPT.read_text().replace("@REQUESTS@", "{" + mix + "}")
    text = text.replace("@AUTHORIZATION@", _lua_string(authorization))
    path.write_text(text)
    path.chmod(0o600)
    return path


def _lua_string(text: str) -> str:
    if "]==]" in text:
        raise ValueError("text cannot be a Lua long string")
    return "[==[" + text + "]==]"


def run_wrk(
    procs: Procs, port: int, script: Path, duration: int, connections: int
) -> SaturationResult:
    """Saturate 127.0.0.1:`port` with wrk (one thread) for `duration` whole seconds."""
    url = f"http://{check_loopback('127.0.0.1')}:{port}/"
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--timeout", "5s"]
    proc = subprocess.Popen(
        [*argv, "-s", str(script), url],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    procs.track(proc)
    out, _ = proc.communicate(timeout=duration + 30)
    procs.stop(proc)
    text = out.decode(errors="replace")
    for line in text.splitlines():
        if line.startswith(WRK_MARKER):
            s = json.loads(line[len(WRK_MARKER) :])
            return SaturationResult(
                s["requests"] / s["duration_us"] * 1e6,
                s["requests"],
                s["p50_us"] / 1000,
                s["p99_us"] / 1000,
                s["p999_us"] / 1000,
                s["failed"],
            )
    raise RuntimeError(f"wrk gave no summary:\n{text}")


def percentile(values: Sequence[float], q: float) -> float:
    """The `q`-th percentile (0-100) of `values`, nearest rank."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]
