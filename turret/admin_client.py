"""The operator's side of the admin socket: `turret status`, `agents`, `revoke`, `unrevoke`,
`killswitch`, `seal`, `unseal`, `tokens [--agent A]`, `tokens revoke ID`. JSON over HTTP on a
unix socket; each prints a line a person can read, or the JSON document with `--json`."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

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


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the admin commands to the `turret` parser."""
    commands = {
        "status": "show what Turret is doing: sealed, agents, tokens, requests",
        "agents": "list agents: grants, revoked or not, last seen, requests",
        "revoke": "revoke AGENT (and every token derived from it) from the next request on",
        "unrevoke": "lift AGENT's revocation",
        "killswitch": "seal Turret and revoke every derived token",
        "seal": "refuse every agent request (503 sealed) until unsealed",
        "unseal": "serve agents again",
        "tokens": "list derived tokens (`tokens revoke ID`: revoke one and all it minted)",
    }
    for name, help_text in commands.items():
        p = sub.add_parser(name, help=help_text)
        if name in {"revoke", "unrevoke"}:
            p.add_argument("agent", metavar="AGENT")
        if name in {"revoke", "killswitch", "seal"}:
            p.add_argument("--reason", metavar="TEXT", help="recorded with the action")
        if name == "tokens":
            p.add_argument("action", nargs="?", choices=["revoke"], help="revoke token ID")
            p.add_argument("token_id", nargs="?", metavar="ID")
            p.add_argument("--agent", metavar="AGENT", help="only this agent's tokens")
        p.add_argument(
            "--admin-socket",
            metavar="PATH",
            help=f"default $TURRET_ADMIN_SOCKET, else {DEFAULT_ADMIN_SOCKET}",
        )
        p.add_argument("--json", action="store_true", help="print the JSON document")
        p.set_defaults(func=run, command=name)


def call_for(args: argparse.Namespace) -> Call:
    """The admin request a command line asks for."""
    reason = {"reason": args.reason} if getattr(args, "reason", None) else {}
    match args.command:
        case "status" | "agents":
            return Call("GET", args.command)
        case "revoke" | "unrevoke":
            # Quoted whole: a name is one path segment, never `../seal`.
            agent = urllib.parse.quote(args.agent, safe="")
            return Call("POST", f"agents/{agent}/{args.command}", reason)
        case "tokens":
            return _tokens_call(args)
        case _:
            return Call("POST", args.command, reason)


def _tokens_call(args: argparse.Namespace) -> Call:
    if args.action is None:
        if args.token_id is not None:
            raise UsageError("expected `tokens revoke ID`")
        query = f"?agent={urllib.parse.quote(args.agent, safe='')}" if args.agent else ""
        return Call("GET", f"tokens{query}")
    if args.token_id is None or args.agent is not None:
        raise UsageError("usage: turret tokens revoke ID")
    return Call("POST", f"tokens/{urllib.parse.quote(args.token_id, safe='')}/revoke")


def run(args: argparse.Namespace) -> int:
    """Run one admin command; the exit status (0, 1 failed, 2 usage, 69 Turret not reachable)."""
    path = args.admin_socket or os.environ.get("TURRET_ADMIN_SOCKET") or DEFAULT_ADMIN_SOCKET
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


def render(command: str, doc: Any) -> str:
    """The text a person reads for `command`'s answer."""
    if command == "status":
        return render_status(doc)
    if command == "agents":
        return render_agents(doc["agents"])
    if command == "tokens":
        if "tokens" in doc:
            return render_tokens(doc["tokens"])
        return f"revoked {len(doc['revoked'])} tokens: {', '.join(doc['revoked']) or 'none'}"
    if command == "revoke":
        return f"revoked {doc['agent']}; {doc['derived_tokens_revoked']} derived tokens revoked"
    if command == "unrevoke":
        return f"{doc['agent']} is no longer revoked"
    if command == "killswitch":
        return f"sealed; {doc['derived_tokens_revoked']} derived tokens revoked"
    if command == "seal":
        return f"sealed: {_seal_line(doc['sealed'])}"
    return "unsealed"


def render_status(doc: dict[str, Any]) -> str:
    """`turret status` as lines."""
    requests = doc["requests"]
    decisions = requests["decisions"]
    revoked = ", ".join(doc["agents"]["revoked"]) or "none"
    lines = [
        f"turret {doc['version']}, up {_duration(doc['uptime_seconds'])}, "
        f"config {doc['config_digest']}, audit to {doc['audit_sink']}",
        f"sealed: {_seal_line(doc['sealed']) if doc['sealed'] else 'no'}",
        f"agents: {doc['agents']['count']} (revoked: {revoked})",
        f"services: {', '.join(doc['services']) or 'none'}",
        f"derived tokens in force: {doc['derived_tokens_in_force']}",
        f"last reload: {doc['last_reload']}",
        f"requests: {decisions.get('allow', 0)} allowed, {decisions.get('deny', 0)} denied, "
        f"{requests['in_flight']} in flight; audit failures: {requests['audit_failures']}",
    ]
    if not doc["state_store"]:
        lines.append("state store: none (seal and revoke need a state directory)")
    return "\n".join(lines)


def render_agents(agents: list[dict[str, Any]]) -> str:
    """`turret agents` as a table."""
    rows = [("AGENT", "REVOKED", "TOKEN EXPIRES", "LAST SEEN", "ALLOW", "DENY", "GRANTS")]
    for a in agents:
        grants = a["grants"]
        summary = [f"{s} {'/'.join(m)}" for s, m in grants["proxy"].items()]
        summary += [f"cap {c}" for c in grants["capabilities"]]
        expires = a["expires"] or "never"
        rows.append(
            (
                a["agent"],
                "yes" if a["revoked"] else "no",
                f"expired {expires}" if a["expired"] else expires,
                _when(a["last_seen"]),
                str(a["requests"].get("allow", 0)),
                str(a["requests"].get("deny", 0)),
                "; ".join(summary) or "none",
            )
        )
    return _table(rows)


def render_tokens(tokens: list[dict[str, Any]]) -> str:
    """`turret tokens` as a table: never a token value (the server has none to give)."""
    if not tokens:
        return "no derived tokens"
    rows = [("ID", "AGENT", "PARENT", "STATE", "EXPIRES", "USES", "CREATED", "SCOPE", "DESCR")]
    for t in tokens:
        state = _token_state(t)
        uses = f"{t['uses']}/{t['max_uses']}" if t["max_uses"] is not None else str(t["uses"])
        rows.append(
            (
                t["id"],
                t["agent"],
                t["parent"] or "-",
                state,
                t["expires_at"],
                uses,
                t["created"],
                t["scope_summary"],
                t["description"] or "",
            )
        )
    return _table(rows)


def _token_state(token: dict[str, Any]) -> str:
    if token["revoked"]:
        return "revoked"
    if token["in_force"]:
        return "in force"
    used_up = token["max_uses"] is not None and token["uses"] >= token["max_uses"]
    return "used up" if used_up else "expired"


def _table(rows: Sequence[tuple[str, ...]]) -> str:
    """Columns padded to their widest cell; the last one as it is."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(r[:-1], widths, strict=True)) + "  " + r[-1]
        for r in rows
    )


def _seal_line(seal: dict[str, Any]) -> str:
    return f"since {_when(seal['since'])} by {seal['by']}: {seal['reason']}"


def _when(at: float | None) -> str:
    if at is None:
        return "never"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(at))


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    return f"{days}d {hours}h {minutes}m" if days else f"{hours}h {minutes}m {secs}s"
