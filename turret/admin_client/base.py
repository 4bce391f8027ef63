"""What every operator command shares: the admin socket's address, one JSON request on it, the
exit statuses, and the pieces of text output (tables, times, durations).

A command module (`control`, ...) adds its subcommands with `add_parser`, says which request a
command line makes (`call_for`) and how its answer reads (`render`); `run` does the rest."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

import aiohttp

from turret.model import DEFAULT_ADMIN_SOCKET

EX_OK, EX_FAILED, EX_USAGE, EX_UNAVAILABLE = 0, 1, 2, 69  # 69: sysexits.h EX_UNAVAILABLE
TIMEOUT = aiohttp.ClientTimeout(total=30)


@dataclass(frozen=True)
class Call:
    """One admin request: the method, the path under /v1/admin, and a JSON body."""

    method: str
    path: str
    body: dict[str, str] | None = None


class UsageError(Exception):
    """The command line is incomplete in a way argparse cannot say (`tokens revoke` without ID)."""


class Unreachable(Exception):
    """Turret did not answer on the admin socket (not running, no access, or refused)."""


Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"
CallFor = Callable[[argparse.Namespace], Call]
Render = Callable[[str, Any], str]


def add_parser(
    sub: Subparsers, name: str, help_text: str, call_for: CallFor, render: Render
) -> argparse.ArgumentParser:
    """A subcommand talking to the admin socket, with `--admin-socket` and `--json`."""
    p = sub.add_parser(name, help=help_text)
    p.add_argument(
        "--admin-socket",
        metavar="PATH",
        help=f"default $TURRET_ADMIN_SOCKET, else {DEFAULT_ADMIN_SOCKET}",
    )
    p.add_argument("--json", action="store_true", help="print the JSON document")
    p.set_defaults(func=lambda args: run(args, call_for, render), command=name)
    return p


def socket_path(args: argparse.Namespace) -> str:
    """The admin socket a command line names, else the environment's, else the default."""
    return args.admin_socket or os.environ.get("TURRET_ADMIN_SOCKET") or DEFAULT_ADMIN_SOCKET


def run(args: argparse.Namespace, call_for: CallFor, render: Render) -> int:
    """Run one admin command; the exit status (0, 1 failed, 2 usage, 69 Turret not reachable)."""
    path = socket_path(args)
    try:
        call = call_for(args)
    except UsageError as exc:
        print(f"turret {args.command}: {exc}", file=sys.stderr)
        return EX_USAGE
    try:
        status, doc = asyncio.run(request(path, call))
    except Unreachable as exc:
        print(f"turret: {exc}", file=sys.stderr)
        return EX_UNAVAILABLE
    if status != 200:
        error = doc.get("error", {}) if isinstance(doc, dict) else {}
        if args.json:
            print(json.dumps(doc, indent=2))
        print(f"turret {args.command}: {error.get('message', status)}", file=sys.stderr)
        return EX_FAILED
    print(json.dumps(doc, indent=2) if args.json else render(args.command, doc))
    return EX_OK


async def request(socket_path: str, call: Call) -> tuple[int, Any]:
    """Send `call` on the admin socket; its status and JSON document."""
    connector = aiohttp.UnixConnector(socket_path)
    try:
        async with (
            aiohttp.ClientSession(connector=connector, timeout=TIMEOUT) as session,
            session.request(
                call.method, f"http://turret/v1/admin/{call.path}", json=call.body
            ) as resp,
        ):
            return resp.status, await resp.json(content_type=None)
    except aiohttp.ClientConnectorError as exc:
        raise Unreachable(f"{socket_path}: Turret is not reachable ({exc})") from None
    except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError):
        # Connected, then closed before any answer: what Turret does to a peer it refuses.
        raise Unreachable(
            f"{socket_path}: Turret closed the connection unanswered (is this uid allowed? "
            "root, Turret's own user, admin.allow_uids and admin.allow_group are)"
        ) from None
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        raise Unreachable(f"{socket_path}: Turret is not reachable ({exc})") from None


def table(rows: Sequence[tuple[str, ...]]) -> str:
    """Columns padded to their widest cell; the last one as it is."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(r[:-1], widths, strict=True)) + "  " + r[-1]
        for r in rows
    )


def when(at: float | None) -> str:
    if at is None:
        return "never"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(at))


def duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    return f"{days}d {hours}h {minutes}m" if days else f"{hours}h {minutes}m {secs}s"
