"""Policy decisions: pure functions from (principal, action) to a `Decision` value. Deny by default.

Rules come from the agent and from every group whose agent globs match it. A deny rule wins over
every allow, in report mode too: an operator's explicit deny is never relaxed. When no rule
allows, the answer is deny; an agent in `report` mode is allowed what its grants do not cover,
and the decision says so (`REPORT`), for rolling out a policy. A request for a service that does
not exist is denied here, in report mode too: there is nowhere to send it. What narrows a
principal (a derived token's scope, a peer binding) is asked last and can only deny.
"""

from __future__ import annotations

import enum
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import TypeVar

from turret.capabilities.schema import constraint_problem
from turret.model import (
    Action,
    Agent,
    Capability,
    CapabilityAction,
    CapabilityDeny,
    CapabilityGrant,
    Constraint,
    Params,
    ProxyDeny,
)
from turret.paths import CanonicalPath
from turret.principal import Principal

_Rule = TypeVar("_Rule", CapabilityDeny, ProxyDeny)


class Result(enum.Enum):
    """What a decision lets happen."""

    ALLOW = "allow"
    DENY = "deny"
    REPORT = "report"  # report mode: allowed, but enforcement would deny it
    APPROVAL = "approval"  # held until a person approves it (turret.pipeline.approvals)


@dataclass(frozen=True)
class Decision:
    """The outcome of a policy check: what it lets happen, why, and which rule (a dotted config
    path) made it."""

    result: Result
    reason: str
    rule: str | None = None

    @classmethod
    def allow(cls, reason: str, rule: str | None = None) -> Decision:
        return cls(Result.ALLOW, reason, rule)

    @classmethod
    def deny(cls, reason: str, rule: str | None = None) -> Decision:
        return cls(Result.DENY, reason, rule)

    @property
    def allowed(self) -> bool:
        """True if the action may go ahead now."""
        return self.result in (Result.ALLOW, Result.REPORT)

    @property
    def would_deny(self) -> bool:
        """True when report mode allowed what enforcement would have denied."""
        return self.result is Result.REPORT


def decide(principal: Principal, action: Action, services: Collection[str]) -> Decision:
    """The decision on `action` for `principal`: the agent's rules, then every restriction."""
    if isinstance(action, CapabilityAction):
        decision = decide_capability(principal.agent, action.capability, action.params)
    elif action.service not in services:
        return Decision.deny(f"no service {action.service!r}")
    else:
        decision = decide_proxy(principal.agent, action.service, action.method, action.path)
    if not decision.allowed and decision.result is not Result.APPROVAL:
        return decision
    for restriction in principal.restrictions:
        refusal = restriction.refusal(action)
        if refusal is not None:
            return Decision.deny(refusal)
    return decision


def decide_proxy(agent: Agent, service: str, method: str, path: CanonicalPath) -> Decision:
    """Allow only if some proxy grant matches service, method and canonical path, and no proxy
    deny rule matches the canonical path or its folded reading (grants are never widened)."""
    for rule in _denies(agent, ProxyDeny):
        if rule.service == service and method in rule.methods:
            for glob in rule.paths:
                # Also on the folded reading: fullwidth "/ADMIN" is "/admin" to many upstreams.
                if glob.covers(path):
                    reason = f"{method} {glob.pattern} on {service} denied"
                    return Decision.deny(reason, rule.rule)
    index = agent.proxy_index.get((service, method))
    for glob, rule_path in index.matching(path) if index else ():
        return Decision.allow(f"{method} {glob.pattern} on {service} granted", rule_path)
    reason = f"no grant allows {method} {path.encoded} on {service}"
    return _enforced(agent, Decision.deny(reason))


def decide_capability(agent: Agent, capability: Capability, params: Params) -> Decision:
    """Allow if a grant's name glob matches and its constraints hold, and no deny rule matches.

    When grants match by name but a constraint fails, the reason names the parameter and the
    grant; parameter values never appear in a reason.
    """
    name = capability.name
    for rule in _denies(agent, CapabilityDeny):
        if fnmatchcase(name, rule.name):
            return Decision.deny(f"{name} is denied", rule.rule)
    refusal: Decision | None = None
    for grant in capability_grants(agent, name):
        problem = _constraint_problem(grant.params, params)
        if problem is None and not needs_approval(grant, params):
            return Decision.allow(f"{name} granted", grant.rule)
        if problem is None:
            # Held unless another grant allows it outright: grants add up, whatever their order.
            held = Decision(Result.APPROVAL, f"{name} granted with approval", grant.rule)
            refusal = refusal if refusal and refusal.result is Result.APPROVAL else held
        else:
            refusal = refusal or Decision.deny(f"{name}: {problem} ({grant.rule})", grant.rule)
    if refusal is not None and refusal.result is Result.APPROVAL:
        return refusal
    return _enforced(agent, refusal or Decision.deny(f"no grant allows {name}"))


def needs_approval(grant: CapabilityGrant, params: Params) -> bool:
    """True if a call `grant` allows waits for a person: `approval: required`, or each `when`
    constraint met (a parameter the call lacks counts as met, so a gap never skips approval)."""
    if grant.approval is None:
        return False
    when = grant.approval.when or ()
    return all(
        params.get(pname) is None or constraint_problem(c, params[pname]) is None
        for pname, c in when
    )


def denied_by_name(agent: Agent, name: str) -> bool:
    """True if a deny rule refuses the capability `name` whatever its parameters."""
    return any(fnmatchcase(name, r.name) for r in _denies(agent, CapabilityDeny))


def capability_grants(agent: Agent, name: str) -> Iterator[CapabilityGrant]:
    """The agent's and its groups' grants whose name glob matches `name`, agent's first."""
    for grant in (*agent.capabilities, *(g for grp in agent.groups for g in grp.capabilities)):
        if fnmatchcase(name, grant.name):
            yield grant


def _constraint_problem(
    constraints: tuple[tuple[str, Constraint], ...], params: Params
) -> str | None:
    for pname, constraint in constraints:
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
    return Decision(Result.REPORT, f"report mode, would deny: {decision.reason}", decision.rule)
