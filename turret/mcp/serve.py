"""Run the bridge on the transport asked for; start failures become `StartError`.

SIGTERM ends serving as EOF does: the serving task is cancelled and unwinds, exit status 0.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys

from turret.mcp.bridge import TurretRefused
from turret.mcp.client import DEFAULT_SOCKET, StartError, Target, TurretClient, TurretUnreachable
from turret.mcp.http import Listen, serve_http
from turret.mcp.names import NameClash
from turret.mcp.stdio import serve_stdio
from turret.mcp.tools import Features

log = logging.getLogger("turret.mcp")


async def serve(args: argparse.Namespace, target: Target, token: str | None) -> None:
    """Serve stdio with `token`, or Streamable HTTP (`args.listen`) with callers' tokens."""
    features = Features(
        not args.no_http, not args.no_explain, args.http_max_body, args.approval_wait
    )
    listen = None
    if args.listen:
        try:
            listen = Listen.parse(args.listen, allow_remote=args.allow_remote)
        except ValueError as exc:
            raise StartError(str(exc)) from None
    async with TurretClient(target) as client:
        if listen is not None:
            serving = asyncio.ensure_future(serve_http(client, features, listen))
        else:
            serving = asyncio.ensure_future(serve_stdio(client, features, token or "", args.poll))
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        stopping = asyncio.ensure_future(stop.wait())
        await asyncio.wait({serving, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if stop.is_set():
            serving.cancel()
            await _stopped(serving)
        stopping.cancel()
        try:
            serving.result()
        except TurretUnreachable as exc:
            raise StartError(f"{exc} at {target.url or target.socket or DEFAULT_SOCKET}") from None
        except TurretRefused as exc:
            raise StartError(f"the token was not accepted: {exc}") from None
        except NameClash as exc:
            raise StartError(f"refusing to start: {exc}") from None


async def _stopped(serving: asyncio.Future[None]) -> None:
    """After SIGTERM: let the server unwind, then leave. The SDK reads stdin in a worker thread
    that no signal interrupts, and the interpreter would wait for that read at exit; once the
    server has unwound (or had a second to), that blocked read is all that is left."""
    await asyncio.wait({serving}, timeout=1.0)
    log.info("stopped on SIGTERM")
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
