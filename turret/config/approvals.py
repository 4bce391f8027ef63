"""Reading human approval settings: a capability grant's `approval:` and the top-level
`approvals: {ttl, notify: {capability, params}}`.

A grant's `approval: required` holds every call it allows for a person; `approval: {when:
{PARAM: CONSTRAINT}}` only the calls whose parameters meet every constraint (the grant
constraint syntax, read by `turret.config.constraints`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from turret.capabilities.schema import validate_params
from turret.config.checker import Checker
from turret.config.constraints import read_grant_constraint
from turret.config.leases import parse_duration
from turret.config.yamlload import join
from turret.errors import RequestError
from turret.model import ApprovalRule, ApprovalSettings, Capability, Constraint, ParamValue

MIN_TTL, MAX_TTL = 10.0, 7 * 86400.0
MESSAGE_PARAM = "message"  # the notify capability's parameter Turret fills in itself


def read_grant_approval(
    ck: Checker, path: str, value: Any, matched: list[Capability]
) -> ApprovalRule | None:
    """A grant's `approval:` (`required` or `{when: {...}}`) for the capabilities it matches."""
    if value == "required":
        return ApprovalRule()
    if not isinstance(value, dict):
        ck.fail(path, "must be 'required' or {when: {PARAM: CONSTRAINT}}")
        return None
    spec = ck.mapping(path, value, {"when"}, set())
    if spec is None or "when" not in spec:
        return None
    where = join(path, "when")
    if not isinstance(spec["when"], dict) or not spec["when"]:
        ck.fail(where, "must be a mapping of at least one parameter to its constraint")
        return None
    when = [_constraint(ck, join(where, n), n, body, matched) for n, body in spec["when"].items()]
    if None in when:
        return None
    return ApprovalRule(tuple((n, c) for n, c in zip(spec["when"], when, strict=True) if c))


def _constraint(
    ck: Checker, path: str, name: str, body: Any, matched: list[Capability]
) -> Constraint | None:
    kinds = set()
    for cap in matched:
        param = cap.param(name)
        if param is None:
            ck.fail(path, f"{cap.name} has no parameter {name!r}")
            return None
        kinds.add(param.type)
    return read_grant_constraint(ck, path, body, kinds.pop() if len(kinds) == 1 else None)


def read_approvals(ck: Checker, value: Any, caps: Mapping[str, Capability]) -> ApprovalSettings:
    """`approvals:`: the time a request waits (`ttl`, default 15m) and who is told (`notify`)."""
    spec = ck.mapping("approvals", value, set(), {"ttl", "notify"})
    if spec is None:
        return ApprovalSettings()
    ttl = ApprovalSettings.ttl
    if "ttl" in spec:
        seconds = parse_duration(spec["ttl"])
        if seconds is None or not MIN_TTL <= seconds <= MAX_TTL:
            ck.fail(join("approvals", "ttl"), "must be a duration from 10s to 7d, such as 15m")
        else:
            ttl = seconds
    notify, params = _notify(ck, join("approvals", "notify"), spec.get("notify"), caps)
    return ApprovalSettings(ttl, notify, params)


def _notify(
    ck: Checker, path: str, value: Any, caps: Mapping[str, Capability]
) -> tuple[str | None, tuple[tuple[str, ParamValue], ...]]:
    """The notify capability and its fixed parameters, checked now so that telling the operator
    can only fail at the service, never on a config mistake."""
    if value is None:
        return None, ()
    spec = ck.mapping(path, value, {"capability"}, {"params"})
    if spec is None or "capability" not in spec:
        return None, ()
    name = spec["capability"]
    cap = caps.get(name) if isinstance(name, str) else None
    if cap is None:
        ck.fail(join(path, "capability"), "must name a configured capability")
        return None, ()
    message = cap.param(MESSAGE_PARAM)
    if message is None or message.type != "string":
        ck.fail(join(path, "capability"), f"{cap.name} has no string parameter 'message'")
        return None, ()
    params = spec.get("params", {})
    if not isinstance(params, dict) or MESSAGE_PARAM in params:
        ck.fail(join(path, "params"), "must be a mapping of parameters other than 'message'")
        return None, ()
    try:
        validate_params(cap, {**params, MESSAGE_PARAM: "check"})
    except RequestError as exc:
        ck.fail(join(path, "params"), exc.message)
        return None, ()
    return cap.name, tuple(sorted(params.items()))
