"""The operator's control commands on the admin socket: `turret status`, `agents`, `revoke`,
`unrevoke`, `killswitch`, `seal`, `unseal`, `tokens [--agent A]`, `tokens revoke ID`. Each prints
a line a person can read, or the JSON document with `--json`."""

from __future__ import annotations

import argparse
import urllib.parse
from typing import Any

from turret.admin_client.base import Call, Subparsers, UsageError, add_parser, duration, table, when
from turret.admin_client.keyage import attention_line


def add_commands(sub: Subparsers) -> None:
    """Add the control commands to the `turret` parser."""
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
        p = add_parser(sub, name, help_text, call_for, render)
        if name in {"revoke", "unrevoke"}:
            p.add_argument("agent", metavar="AGENT")
        if name in {"revoke", "killswitch", "seal"}:
            p.add_argument("--reason", metavar="TEXT", help="recorded with the action")
        if name == "tokens":
            p.add_argument("action", nargs="?", choices=["revoke"], help="revoke token ID")
            p.add_argument("token_id", nargs="?", metavar="ID")
            p.add_argument("--agent", metavar="AGENT", help="only this agent's tokens")


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
        f"turret {doc['version']}, up {duration(doc['uptime_seconds'])}, "
        f"config {doc['config_digest']}, audit to {doc['audit_sink']}",
        f"sealed: {_seal_line(doc['sealed']) if doc['sealed'] else 'no'}",
        f"agents: {doc['agents']['count']} (revoked: {revoked})",
        f"services: {', '.join(doc['services']) or 'none'}",
        f"credentials needing attention: {attention_line(doc['credentials_needing_attention'])}",
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
                when(a["last_seen"]),
                str(a["requests"].get("allow", 0)),
                str(a["requests"].get("deny", 0)),
                "; ".join(summary) or "none",
            )
        )
    return table(rows)


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
    return table(rows)


def _token_state(token: dict[str, Any]) -> str:
    if token["revoked"]:
        return "revoked"
    if token["in_force"]:
        return "in force"
    used_up = token["max_uses"] is not None and token["uses"] >= token["max_uses"]
    return "used up" if used_up else "expired"


def _seal_line(seal: dict[str, Any]) -> str:
    return f"since {when(seal['since'])} by {seal['by']}: {seal['reason']}"
