"""Policy decisions: pure functions from (agent, request) to a `Decision` value. Deny by default.

Rules come from the agent and from every group whose agent globs match it. A deny rule wins over
every allow, in report mode too: an operator's explicit deny is never relaxed. When no rule
allows, the answer is deny; an agent in `report` mode is allowed what its grants do not cover,
and the decision says so, for rolling out a policy.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import TypeVar

from turret.capabilities.schema import constraint_problem
from turret.model import Agent, Capability, CapabilityDeny, CapabilityGrant, Params, ProxyDeny
from turret.paths import CanonicalPath

_Rule = TypeVar("_Rule", CapabilityDeny, ProxyDeny)


@dataclass(frozen=True)
class Decision:
    """The outcome of a policy check: whether, why, and which rule (a dotted config path).

    `would_deny` is set when report mode allowed what enforcement would have denied.
    """

    allowed: bool
    reason: str
    rule: str | None = None
    would_deny: bool = False


def decide_proxy(agent: Agent, service: str, method: str, path: CanonicalPath) -> Decision:
    """Allow only if some proxy grant matches service, method and canonical path, and no proxy
    deny rule matches the canonical path or its folded reading (grants are never widened)."""
    for rule in _denies(agent, ProxyDeny):
        if rule.service == service and method in rule.methods:
            for glob in rule.paths:
                # Also on the folded reading: fullwidth "/ADMIN" is "/admin" to many upstreams.
                if glob.covers(path):
                    reason = f"{method} {glob.pattern} on {service} denied"
                    return Decision(False, reason, rule.rule)
    index = agent.proxy_index.get((service, method))
    for glob, rule_path in index.matching(path) if index else ():
        return Decision(True, f"{method} {glob.pattern} on {service} granted", rule_path)
    reason = f"no grant allows {method} {path.encoded} on {service}"
    return _enforced(agent, Decision(False, reason))


def decide_capability(agent: Agent, capability: Capability, params: Params) -> Decision:
    """Allow if a grant's name glob matches and its constraints hold, and no deny rule matches.

    When grants match by name but a constraint fails, the reason names the parameter and the
    grant; parameter values never appear in a reason.
    """
    name = capability.name
    for rule in _denies(agent, CapabilityDeny):
        if fnmatchcase(name, rule.name):
            return Decision(False, f"{name} is denied", rule.rule)
    refusal: Decision | None = None
    for grant in capability_grants(agent, name):
        problem = _constraint_problem(grant, params)
        if problem is None:
            return Decision(True, f"{name} granted", grant.rule)
        refusal = refusal or Decision(False, f"{name}: {problem} ({grant.rule})", grant.rule)
    return _enforced(agent, refusal or Decision(False, f"no grant allows {name}"))


def denied_by_name(agent: Agent, name: str) -> bool:
    """True if a deny rule refuses the capability `name` whatever its parameters."""
    return any(fnmatchcase(name, r.name) for r in _denies(agent, CapabilityDeny))


def capability_grants(agent: Agent, name: str) -> Iterator[CapabilityGrant]:
    """The agent's and its groups' grants whose name glob matches `name`, agent's first."""
    for grant in (*agent.capabilities, *(g for grp in agent.groups for g in grp.capabilities)):
        if fnmatchcase(name, grant.name):
            yield grant


def _constraint_problem(grant: CapabilityGrant, params: Params) -> str | None:
    for pname, constraint in grant.params:
        value = params.get(pname)
        if value is None:
            return f"params.{pname} is required by the grant"
        problem = constraint_problem(constraint, value)
        if problem:
            return f"params.{pname} {problem}"
    return None


def _denies(agent: Agent, kind: type[_Rule]) -> Iterator[_Rule]:
    for rule in (*agent.deny, *(r for grp in agent.groups for r in grp.deny)):
        if isinstance(rule, kind):
            yield rule


def _enforced(agent: Agent, decision: Decision) -> Decision:
    """A missing grant as enforced; in report mode, an allow that records the would-be denial."""
    if decision.allowed or not agent.report:
        return decision
    return Decision(True, f"report mode, would deny: {decision.reason}", decision.rule, True)
