"""The `turret mcp` command line: options, the token, and start failures on stderr.

This module loads without the `mcp` extra (so does the rest of `turret`); the SDK is imported
when `turret mcp` runs. The token comes from `TURRET_TOKEN`, `--token-file`, or the unit's
credential `$CREDENTIALS_DIRECTORY/turret-token`, never from argv (world-readable in /proc).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from pathlib import Path

from turret.mcp.client import DEFAULT_SOCKET, StartError, Target

CREDENTIAL_NAME = "turret-token"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The `turret mcp` options."""
    where = p.add_mutually_exclusive_group()
    where.add_argument("--socket", metavar="PATH", help=f"Turret's agent socket ({DEFAULT_SOCKET})")
    where.add_argument("--url", metavar="URL", help="Turret over TCP, e.g. http://127.0.0.1:8421")
    p.add_argument(
        "--token-file",
        metavar="PATH",
        help="read the agent token here (default: $TURRET_TOKEN, then "
        "$CREDENTIALS_DIRECTORY/turret-token)",
    )
    p.add_argument(
        "--listen",
        metavar="ADDR",
        help="serve Streamable HTTP on HOST:PORT or unix:PATH instead of stdio; each request "
        "brings its own token as 'Authorization: Bearer'",
    )
    p.add_argument(
        "--allow-remote", action="store_true", help="let --listen use a non-loopback address"
    )
    p.add_argument(
        "--poll",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="how often to check for a changed tool list (stdio; 0: never; default 30)",
    )
    p.add_argument("--no-http", action="store_true", help="do not offer the turret_http tool")
    p.add_argument("--no-explain", action="store_true", help="do not offer turret_explain")
    p.add_argument(
        "--http-max-body",
        type=int,
        default=64 * 1024,
        metavar="BYTES",
        help="turret_http returns at most this much of a body (default 65536)",
    )
    p.add_argument(
        "--approval-wait",
        type=float,
        default=900.0,
        metavar="SECONDS",
        help="how long a call held for human approval is waited for (default 900)",
    )


def run(args: argparse.Namespace) -> int:
    """Run `turret mcp`; the exit status. Logging goes to stderr only."""
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="turret mcp: %(levelname)s %(message)s"
    )
    try:
        # The SDK comes with the optional mcp extra; nothing else of Turret needs it.
        from turret.mcp.serve import serve  # noqa: PLC0415
    except ImportError:
        sys.stderr.write("turret mcp: needs the mcp extra (pip install 'turret[mcp]')\n")
        return 1
    target = Target(socket=args.socket or DEFAULT_SOCKET, url=args.url)
    try:
        token = None if args.listen else read_token(args.token_file)
        asyncio.run(serve(args, target, token))
    except StartError as exc:
        sys.stderr.write(f"turret mcp: {exc}\n")
        return 1
    return 0


def read_token(token_file: str | None) -> str:
    """The agent token from the file, `TURRET_TOKEN`, or the systemd credential."""
    if token_file is None and os.environ.get("TURRET_TOKEN", "").strip():
        return os.environ["TURRET_TOKEN"].strip()
    credentials = os.environ.get("CREDENTIALS_DIRECTORY")
    if token_file is None and credentials and (Path(credentials) / CREDENTIAL_NAME).is_file():
        token_file = str(Path(credentials) / CREDENTIAL_NAME)
    if token_file is None:
        raise StartError(
            "no token: set TURRET_TOKEN, pass --token-file PATH, or give the unit the "
            f"credential {CREDENTIAL_NAME} (LoadCredential=)"
        )
    try:
        token = Path(token_file).read_text().strip()
    except OSError as exc:
        raise StartError(f"cannot read the token file {token_file}: {exc.strerror}") from None
    if not token:
        raise StartError(f"the token file {token_file} is empty")
    return token
