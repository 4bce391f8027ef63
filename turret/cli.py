"""Command line: `turret serve`, `turret check-config`, `turret token new`, `turret mcp`,
the operator's commands on the admin socket (`turret status`, `revoke`, `killswitch`, ...),
`turret --version`."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Sequence

from turret import __version__, admin_client
from turret.audit import Auditor, default_sink
from turret.auth import new_token, token_sha256
from turret.config import read_config
from turret.config.providers import dev_only_issues
from turret.errors import AuditUnavailable, ConfigError, CredentialError, StartupError
from turret.mcp import entry as mcp_entry
from turret.model import AGENT_NAME
from turret.providers.build import build_runtime
from turret.server import ServeOptions, serve

EX_CONFIG = 78  # sysexits.h; the unit sets RestartPreventExitStatus=78 so it is not retried


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `turret` command; returns the exit status."""
    args = _parser().parse_args(argv)
    return int(args.func(args))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="turret", description="Credential gateway for agents.")
    parser.add_argument("--version", action="version", version=f"turret {__version__}")
    sub = parser.add_subparsers(required=True, metavar="COMMAND")

    p = sub.add_parser("serve", help="run the gateway")
    p.add_argument("--config", required=True, metavar="FILE")
    p.add_argument(
        "--credentials-dir",
        metavar="DIR",
        help="read credentials here (development); default $CREDENTIALS_DIRECTORY",
    )
    p.add_argument(
        "--audit-file",
        metavar="FILE",
        help="append audit records as JSON lines here instead of journald",
    )
    p.add_argument(
        "--state-dir",
        metavar="DIR",
        help="keep the state store here (development); default $STATE_DIRECTORY",
    )
    p.add_argument(
        "--admin-socket",
        metavar="PATH",
        help="bind the admin socket here when not socket-activated (over admin.socket); "
        "default $TURRET_ADMIN_SOCKET",
    )
    p.add_argument(
        "--shutdown-timeout",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="how long in-flight requests may take to finish on stop (default 30)",
    )
    p.add_argument(
        "--dev",
        action="store_true",
        help="allow development-only credential providers (type: env)",
    )
    p.set_defaults(func=_serve)

    p = sub.add_parser("check-config", help="validate a configuration file and exit")
    p.add_argument("file", metavar="FILE")
    p.add_argument(
        "--credentials-dir",
        metavar="DIR",
        help="also load the credentials from DIR (default: do not read credentials)",
    )
    p.set_defaults(func=_check_config)

    p = sub.add_parser("token", help="agent tokens")
    tsub = p.add_subparsers(required=True, metavar="ACTION")
    t = tsub.add_parser("new", help="print a new token for AGENT and its token_sha256 line")
    t.add_argument("agent", metavar="AGENT")
    t.set_defaults(func=_token_new)

    admin_client.add_commands(sub)

    p = sub.add_parser("mcp", help="serve this agent's capabilities as MCP tools (stdio or HTTP)")
    mcp_entry.add_arguments(p)
    p.set_defaults(func=mcp_entry.run)
    return parser


def _serve(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="turret: %(levelname)s %(message)s")
    options = ServeOptions(
        args.config,
        args.credentials_dir,
        args.shutdown_timeout,
        state_dir=args.state_dir,
        admin_socket=args.admin_socket or os.environ.get("TURRET_ADMIN_SOCKET") or None,
        dev=args.dev,
    )
    try:
        auditor = Auditor(default_sink(args.audit_file))
        asyncio.run(serve(options, auditor))
    except (StartupError, AuditUnavailable, OSError) as exc:
        print(f"turret: refusing to start:\n{exc}", file=sys.stderr)
        return EX_CONFIG
    return 0


def _check_config(args: argparse.Namespace) -> int:
    try:
        config = read_config(args.file)
        if args.credentials_dir:
            build_runtime(config, args.credentials_dir)
    except ConfigError as exc:
        for issue in exc.issues:
            print(f"{args.file}:{issue}", file=sys.stderr)
        print(f"{len(exc.issues)} error(s)", file=sys.stderr)
        return 1
    except CredentialError as exc:
        for problem in exc.problems:
            print(f"{args.file}: {problem}", file=sys.stderr)
        return 1
    for issue in dev_only_issues(config.providers):
        print(f"{args.file}: warning: {issue}", file=sys.stderr)
    print(f"{args.file}: OK ({len(config.services)} services, {len(config.agents)} agents)")
    return 0


def _token_new(args: argparse.Namespace) -> int:
    if not AGENT_NAME.fullmatch(args.agent):
        print(f"turret: agent name must match {AGENT_NAME.pattern}", file=sys.stderr)
        return 2
    token = new_token()
    print(f"token for {args.agent} (shown once; give it to the agent only):\n{token}\n")
    print("put this in the config:")
    print(f"agents:\n  {args.agent}:\n    token_sha256: {token_sha256(token)}")
    return 0
