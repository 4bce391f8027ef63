"""Reading the config's `limits:`, agents' `limits:` and services' `allow_networks:`.

Called by the config loader with its checker, so problems are reported like every other config
problem: dotted key path and line, all at once.
"""

from __future__ import annotations

from dataclasses import fields, replace
from typing import Any, TypeVar

from turret.config.checker import Checker
from turret.config.yamlload import join
from turret.netpolicy import AddressPolicy, parse_network
from turret.ratelimit import LIMIT_RANGES, AgentLimits, FloodLimits, ServerLimits

Limits = TypeVar("Limits", ServerLimits, AgentLimits, FloodLimits)
_SECTIONS = frozenset({"agent", "unauthenticated"})


def read_limits(ck: Checker, value: Any) -> ServerLimits:
    """The top-level `limits:` section, with its `agent:` defaults and the `unauthenticated:`
    flood limit."""
    server = _numbers(ck, "limits", value, ServerLimits(), _SECTIONS)
    sections = value if isinstance(value, dict) else {}
    return replace(
        server,
        agent=_numbers(ck, "limits.agent", sections.get("agent", {}), AgentLimits()),
        unauthenticated=_numbers(
            ck, "limits.unauthenticated", sections.get("unauthenticated", {}), FloodLimits()
        ),
    )


def read_agent_limits(ck: Checker, path: str, value: Any, default: AgentLimits) -> AgentLimits:
    """An agent's `limits:`; keys it leaves out come from `limits.agent`."""
    return _numbers(ck, path, value, default)


def read_address_policy(ck: Checker, path: str, value: Any) -> AddressPolicy:
    """A service's `allow_networks:` list of CIDR networks."""
    networks = []
    for p, net in ck.items(path, value):
        try:
            networks.append(parse_network(net if isinstance(net, str) else ""))
        except ValueError as exc:
            ck.fail(p, str(exc))
    return AddressPolicy(tuple(networks))


def _numbers(
    ck: Checker,
    path: str,
    value: Any,
    limits: Limits,
    other_keys: frozenset[str] | set[str] = frozenset(),
) -> Limits:
    keys = {f.name for f in fields(limits)} - set(other_keys)
    m = ck.mapping(path, value, set(), keys | set(other_keys)) or {}
    changes: dict[str, Any] = {}
    for key in sorted(keys & m.keys()):
        lo, hi, integer = LIMIT_RANGES[key]
        number = ck.number(join(path, key), m[key], lo, hi, integer=integer)
        if number is not None:
            changes[key] = number if integer else float(number)
    return replace(limits, **changes)
