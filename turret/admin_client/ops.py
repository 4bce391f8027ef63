"""The operator's operations commands: `turret metrics [--textfile PATH]` (the admin socket's
`/metrics`, printed or written for node_exporter's textfile collector) and `turret checkin`
(the dead-man switch's check-in)."""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import sys
from pathlib import Path
from typing import Any

import aiohttp

from turret.admin_client.base import (
    EX_FAILED,
    EX_OK,
    EX_UNAVAILABLE,
    TIMEOUT,
    Call,
    Subparsers,
    Unreachable,
    add_parser,
    socket_path,
    when,
)
from turret.model import DEFAULT_ADMIN_SOCKET

TEXTFILE_MODE = 0o644  # node_exporter runs as its own user and must read it


def add_commands(sub: Subparsers) -> None:
    """Add `metrics` and `checkin` to the `turret` parser."""
    add_parser(
        sub,
        "checkin",
        "tell the dead-man switch the operator is there (checkin.max_interval)",
        lambda _: Call("POST", "checkin"),
        _render_checkin,
    )
    p = sub.add_parser("metrics", help="print the Prometheus metrics (or write a textfile)")
    p.add_argument(
        "--admin-socket",
        metavar="PATH",
        help=f"default $TURRET_ADMIN_SOCKET, else {DEFAULT_ADMIN_SOCKET}",
    )
    p.add_argument(
        "--textfile",
        metavar="PATH",
        help="write them to PATH atomically (node_exporter's textfile collector, *.prom)",
    )
    p.set_defaults(func=metrics, command="metrics")


def _render_checkin(_: str, doc: Any) -> str:
    due = doc.get("due_by")
    tail = f"; next one due by {when(due)}" if due is not None else " (no checkin: configured)"
    return f"checked in at {when(doc['checkin']['at'])} as {doc['checkin']['by']}{tail}"


def metrics(args: argparse.Namespace) -> int:
    """`turret metrics`: 0, 1 (an error answer, or the textfile could not be written) or 69."""
    path = socket_path(args)
    try:
        status, text = asyncio.run(fetch_text(path, "/metrics"))
    except Unreachable as exc:
        print(f"turret: {exc}", file=sys.stderr)
        return EX_UNAVAILABLE
    if status != 200:
        print(f"turret metrics: Turret answered HTTP {status}", file=sys.stderr)
        return EX_FAILED
    if args.textfile is None:
        sys.stdout.write(text)
        return EX_OK
    try:
        write_textfile(Path(args.textfile), text)
    except OSError as exc:
        print(f"turret metrics: cannot write {args.textfile}: {exc.strerror}", file=sys.stderr)
        return EX_FAILED
    return EX_OK


async def fetch_text(socket: str, path: str) -> tuple[int, str]:
    """GET `path` on the admin socket: the status and the text."""
    try:
        async with (
            aiohttp.ClientSession(
                connector=aiohttp.UnixConnector(socket), timeout=TIMEOUT
            ) as session,
            session.get(f"http://turret{path}") as resp,
        ):
            return resp.status, await resp.text()
    except aiohttp.ClientConnectorError as exc:
        raise Unreachable(f"{socket}: Turret is not reachable ({exc})") from None
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        raise Unreachable(f"{socket}: Turret is not reachable ({exc})") from None


def write_textfile(path: Path, text: str) -> None:
    """Write `text` to `path` whole or not at all: a temporary file in the same directory
    (a name node_exporter ignores: not `*.prom`), fsynced, then renamed over `path`."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, TEXTFILE_MODE)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            os.fchmod(f.fileno(), TEXTFILE_MODE)  # whatever the umask took away
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
