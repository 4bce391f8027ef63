"""One agent must not stall the others (issue 10, class 5): big bodies are scanned off the loop.

These tests check where the work runs, not how long it takes (the benchmark measures time): a
body over `echo.THRESHOLD` is searched in a worker thread, so the event loop keeps serving other
requests meanwhile; a small one is searched inline, where a thread would cost more than it saves.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable

import pytest
from multidict import CIMultiDict

from turret.echo import THRESHOLD, Redactor, offload
from turret.exfil import TokenGuard, carries_async, find_secret_async

SECRET = "CANARY-stall-0123456789abcdef"


def _probe() -> tuple[Callable[[bytes], int], list[int]]:
    threads: list[int] = []

    def fn(data: bytes) -> int:
        threads.append(threading.get_ident())
        return len(data)

    return fn, threads


@pytest.mark.parametrize(("size", "inline"), [(THRESHOLD, True), (THRESHOLD + 1, False)])
async def test_stall_offload_runs_big_inputs_in_a_worker_thread(size: int, inline: bool) -> None:
    fn, threads = _probe()
    assert await offload(fn, b"x" * size) == size
    assert (threads == [threading.get_ident()]) is inline


async def _ticks_while(work: Awaitable[object]) -> int:
    """How often the event loop ran another task while `work` was in progress."""
    ticks = 0
    done = False

    async def ticker() -> None:
        nonlocal ticks
        while not done:
            ticks += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0)  # let the ticker start before the work does
    started = ticks
    await work
    done = True
    await task
    return ticks - started


# Escape-dense bodies are the slow case for the views (each escape is decoded in Python).
BIG_BODIES = {
    "plain": b"a" * (1 << 20),
    "escapes": b"%41\\u0041&#65;" * (64 << 10),
}


@pytest.mark.parametrize("kind", sorted(BIG_BODIES))
async def test_stall_event_loop_runs_while_a_big_response_is_redacted(kind: str) -> None:
    redactor = Redactor([SECRET])
    body = BIG_BODIES[kind] + SECRET.encode()
    ticks = await _ticks_while(redactor.redact_async(body))
    assert ticks > 0  # on the loop itself, the ticker could not have run until it finished


async def test_stall_event_loop_runs_while_a_big_request_is_searched() -> None:
    guards = (Redactor([SECRET]), TokenGuard().redactor)
    body = BIG_BODIES["escapes"]
    assert await _ticks_while(carries_async(body, guards)) > 0
    search = find_secret_async(guards, path="/x", query="", headers=CIMultiDict(), body=body)
    assert await _ticks_while(search) > 0
