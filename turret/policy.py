"""Policy decisions: pure functions from (agent, request) to a `Decision` value. Deny by default."""

from __future__ import annotations

from dataclasses import dataclass

from turret.config import Agent
from turret.paths import CanonicalPath


@dataclass(frozen=True)
class Decision:
    """The outcome of a policy check: whether, why, and which rule (a dotted config path)."""

    allowed: bool
    reason: str
    rule: str | None = None


def decide_proxy(agent: Agent, service: str, method: str, path: CanonicalPath) -> Decision:
    """Allow only if some proxy grant of `agent` matches service, method and canonical path."""
    for i, grant in enumerate(agent.proxy):
        if grant.service != service or method not in grant.methods:
            continue
        for glob in grant.paths:
            if glob.matches(path):
                rule = f"agents.{agent.name}.proxy[{i}]"
                return Decision(True, f"{method} {glob.pattern} on {service} granted", rule)
    return Decision(False, f"no grant allows {method} {path.encoded} on {service}")
