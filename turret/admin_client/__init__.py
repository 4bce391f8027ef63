"""The operator's side of the admin socket: JSON over HTTP on a unix socket, one module per
group of commands (`control`: status, agents, revoke, seal, killswitch, tokens). `base` holds what
they share: the request, the exit statuses (0, 1 failed, 2 usage, 69 Turret not reachable)."""

from __future__ import annotations

from turret.admin_client import approvals, audit, control, keyage, ops
from turret.admin_client.base import Subparsers


def add_commands(sub: Subparsers) -> None:
    """Add every operator command to the `turret` parser."""
    control.add_commands(sub)
    keyage.add_commands(sub)
    ops.add_commands(sub)
    audit.add_commands(sub)
    approvals.add_commands(sub)
