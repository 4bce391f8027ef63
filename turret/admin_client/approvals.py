"""The operator's approval commands on the admin socket: `turret approvals` (what waits: the
exact call, secrets never in it), `turret approve ID [--reason TEXT]`, `turret deny ID
[--reason TEXT]`. Text for a person, or the JSON document with `--json`."""

from __future__ import annotations

import argparse
import json
from typing import Any

from turret.admin_client.base import Call, Subparsers, UsageError, add_parser, table
from turret.approval import APPROVAL_ID


def add_commands(sub: Subparsers) -> None:
    """Add `approvals`, `approve` and `deny` to the `turret` parser."""
    listing = "list calls waiting for approval (the exact call)"
    add_parser(sub, "approvals", listing, call_for, render)
    for name, help_text in {
        "approve": "approve the call held as ID (the agent's next read performs it, once)",
        "deny": "deny the call held as ID (it is never performed)",
    }.items():
        p = add_parser(sub, name, help_text, call_for, render)
        p.add_argument("approval_id", metavar="ID")
        p.add_argument("--reason", metavar="TEXT", help="recorded, and shown to the agent")


def call_for(args: argparse.Namespace) -> Call:
    """The admin request a command line asks for."""
    if args.command == "approvals":
        return Call("GET", "approvals")
    if not APPROVAL_ID.fullmatch(args.approval_id):
        # Checked here, so the id is one path segment: never `../seal`.
        raise UsageError(f"an approval id matches {APPROVAL_ID.pattern}")
    body = {"reason": args.reason} if args.reason else None
    return Call("POST", f"approvals/{args.approval_id}/{args.command}", body)


def render(command: str, doc: Any) -> str:
    """A command's answer as text."""
    if command != "approvals":
        a = doc["approval"]
        return f"{a['id']}: {a['status']} ({a['agent']} {a['capability']})"
    rows = [("ID", "AGENT", "CAPABILITY", "EXPIRES", "PARAMS")]
    for a in doc["approvals"]:
        params = json.dumps(a["params"], sort_keys=True)
        rows.append((a["id"], a["agent"], a["capability"], a["expires_at"], params))
    return table(rows) if len(rows) > 1 else "no approvals pending"
