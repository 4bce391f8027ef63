"""Derived tokens (leases), pure: the mint request, the scope, the narrowing check, and the
`ScopeRestriction` a derived token's principal carries.

A scope is written in the config's grant syntax (`capabilities` and `proxy`) and read by the
config's own readers, so its syntax, constraint kinds and error messages are the config's. A
child may only narrow: at mint, each part it asks for must be covered by a grant of every layer
above it (the agent's own grants, then each ancestor's scope), else the first part that is not
is named; at every use, the policy asks the scope of the token and of each ancestor again (as
they read against the current config), so narrowing a parent on reload narrows its children.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

from turret.capabilities.schema import constraint_problem
from turret.config.capabilities import read_grants
from turret.config.checker import Checker
from turret.config.leases import parse_duration
from turret.config.proxy import read_proxy_grant
from turret.config.yamlload import Document, join
from turret.errors import InvalidTokenRequest
from turret.model import (
    Action,
    Agent,
    CapabilityAction,
    CapabilityGrant,
    Config,
    Constraint,
    ProxyGrant,
)
from turret.paths import CanonicalPath, PathGlob

DEFAULT_TTL = 3600.0
DEFAULT_MAX_TTL = 86400.0
MAX_DERIVE_DEPTH = 3  # derived tokens below a configured one, whatever may_derive says
MAX_USES_LIMIT = 1_000_000_000
MAX_DESCRIPTION = 200
REQUEST_KEYS = frozenset({"ttl", "description", "max_uses", "may_derive", "capabilities", "proxy"})


@dataclass(frozen=True)
class NewToken:
    """What is recorded when a token is minted (depth is derived from the parent)."""

    id: str
    digest: str
    agent: str
    parent_id: str | None
    scope: str  # JSON text
    created: float
    expires: float
    max_uses: int | None
    may_derive: bool
    description: str = ""


@dataclass(frozen=True)
class Scope:
    """What a derived token may do at most: grants in the config's syntax, and as read."""

    capabilities: tuple[CapabilityGrant, ...]
    proxy: tuple[ProxyGrant, ...]
    source: dict[str, Any]  # {"capabilities": [...], "proxy": [...]} as written: stored, shown

    def text(self) -> str:
        """The scope as the state store keeps it."""
        return json.dumps(self.source, sort_keys=True, separators=(",", ":"))

    def summary(self) -> str:
        """A short account for the audit trail: capability globs and proxy grants."""
        caps = [g.name for g in self.capabilities]
        proxy = [f"{g.service} {','.join(sorted(g.methods))}" for g in self.proxy]
        return f"capabilities: {', '.join(caps) or '-'}; proxy: {'; '.join(proxy) or '-'}"


@dataclass(frozen=True)
class MintRequest:
    """A checked `POST /v1/tokens` body."""

    ttl: float
    description: str
    max_uses: int | None
    may_derive: bool
    scope: Scope


@dataclass(frozen=True)
class ScopeRestriction:
    """A derived token's scope as a restriction on its principal: the action must be within."""

    token_id: str
    scope: Scope

    def refusal(self, action: Action) -> str | None:
        """None if `action` is within the scope, else the reason it is not."""
        if isinstance(action, CapabilityAction):
            name, params = action.capability.name, action.params
            for grant in self.scope.capabilities:
                if fnmatchcase(name, grant.name) and all(
                    p in params and constraint_problem(c, params[p]) is None
                    for p, c in grant.params
                ):
                    return None
            return f"{name} is outside the scope of token {self.token_id}"
        for g in self.scope.proxy:
            if g.service == action.service and action.method in g.methods and any(
                glob.matches(action.path) for glob in g.paths
            ):
                return None
        return f"{action.method} on {action.service} is outside token {self.token_id}'s scope"


def rfc3339(at: float) -> str:
    """`at` (seconds since the epoch) as RFC 3339 UTC, to the second."""
    moment = dt.datetime.fromtimestamp(int(at), dt.UTC)
    return moment.isoformat().replace("+00:00", "Z")


def derive_settings(agent: Agent) -> tuple[float, bool]:
    """The agent's `max_ttl` and `may_derive`: its own, else its groups' (the strictest), else
    the defaults (24h, true)."""
    ttls = [g.max_ttl for g in agent.groups if g.max_ttl is not None]
    max_ttl = agent.max_ttl if agent.max_ttl is not None else min(ttls, default=DEFAULT_MAX_TTL)
    groups = [g.may_derive for g in agent.groups if g.may_derive is not None]
    may_derive = agent.may_derive if agent.may_derive is not None else all(groups)
    return max_ttl, may_derive


def _checker(data: Any) -> Checker:
    return Checker(Document(data))


def parse_request(body: dict[str, Any], config: Config, max_ttl: float) -> MintRequest:
    """The mint request in `body`, or `InvalidTokenRequest` naming the first field at fault."""
    unknown = sorted(body.keys() - REQUEST_KEYS)
    if unknown:
        keys = ", ".join(sorted(REQUEST_KEYS))
        raise InvalidTokenRequest(f"unknown key; a token request takes {keys}")
    ttl = parse_duration(body["ttl"]) if "ttl" in body else DEFAULT_TTL
    if ttl is None:
        raise InvalidTokenRequest("ttl: must be a duration such as 90s, 15m, 1h or 1h30m")
    if ttl > max_ttl:
        raise InvalidTokenRequest(f"ttl: longer than this agent's max_ttl ({max_ttl:g} s)")
    description = body.get("description", "")
    if not isinstance(description, str) or len(description) > MAX_DESCRIPTION:
        raise InvalidTokenRequest(f"description: must be a string of at most {MAX_DESCRIPTION}")
    if not description.isprintable():
        raise InvalidTokenRequest("description: must not hold control characters")
    max_uses = body.get("max_uses")
    if max_uses is not None and (
        isinstance(max_uses, bool) or not isinstance(max_uses, int)
        or not 1 <= max_uses <= MAX_USES_LIMIT
    ):
        raise InvalidTokenRequest(f"max_uses: must be an integer from 1 to {MAX_USES_LIMIT}")
    may_derive = body.get("may_derive", False)
    if not isinstance(may_derive, bool):
        raise InvalidTokenRequest("may_derive: must be true or false")
    source = {"capabilities": body.get("capabilities", []), "proxy": body.get("proxy", [])}
    ck = _checker(source)
    scope = _read_scope(ck, source, config)
    if ck.issues:
        raise InvalidTokenRequest(str(ck.issues[0]))
    return MintRequest(ttl, description, max_uses, may_derive, scope)


def _read_scope(ck: Checker, source: dict[str, Any], config: Config) -> Scope:
    caps = read_grants(ck, "capabilities", source["capabilities"], config.capabilities)
    for i, grant in enumerate(caps):
        if grant.approval is not None:  # a scope only narrows; approval is the config's to ask
            ck.fail(join(join("capabilities", i), "approval"), "is set in the config only")
    proxy = [
        read_proxy_grant(ck, p, g, config.services) for p, g in ck.items("proxy", source["proxy"])
    ]
    return Scope(caps, tuple(g for g in proxy if g is not None), source)


def load_scope(text: str, config: Config) -> Scope:
    """A stored scope read against the current config. A grant the config no longer accepts
    (its capability or service is gone, a parameter changed type) is left out whole, never
    read in part: a scope can only lose what it allowed."""
    try:
        source = json.loads(text)
        items = {k: list(source[k]) for k in ("capabilities", "proxy")}
    except (ValueError, KeyError, TypeError):
        return Scope((), (), {"capabilities": [], "proxy": []})
    caps: list[CapabilityGrant] = []
    for item in items["capabilities"]:
        ck = _checker([item])
        read = read_grants(ck, "capabilities", [item], config.capabilities)
        caps.extend(() if ck.issues else read)
    proxy: list[ProxyGrant] = []
    for item in items["proxy"]:
        ck = _checker(item)
        grant = read_proxy_grant(ck, "proxy", item, config.services)
        if grant is not None and not ck.issues:
            proxy.append(grant)
    return Scope(tuple(caps), tuple(proxy), items)


# --- the narrowing check ------------------------------------------------------------------------


@dataclass(frozen=True)
class Layer:
    """The grants one level above a new token allows: the agent's, or an ancestor's scope."""

    capabilities: tuple[CapabilityGrant, ...]
    proxy: tuple[ProxyGrant, ...]


def agent_layer(agent: Agent) -> Layer:
    """The agent's own and its groups' grants."""
    return Layer(
        (*agent.capabilities, *(g for grp in agent.groups for g in grp.capabilities)),
        (*agent.proxy, *(g for grp in agent.groups for g in grp.proxy)),
    )


def scope_layer(scope: Scope) -> Layer:
    """A scope's grants as a layer."""
    return Layer(scope.capabilities, scope.proxy)


def exceeding(scope: Scope, layers: Iterable[Layer]) -> str | None:
    """The first part of `scope` (a dotted field path) that some layer does not cover, or None
    if every layer covers all of it."""
    layers = list(layers)
    for i, grant in enumerate(scope.capabilities):
        where = join("capabilities", i)
        for layer in layers:
            problem = _capability_exceeds(grant, layer.capabilities)
            if problem is not None:
                return join(where, problem)
    for i, pgrant in enumerate(scope.proxy):
        where = join("proxy", i)
        for layer in layers:
            problem = _proxy_exceeds(pgrant, layer.proxy)
            if problem is not None:
                return join(where, problem)
    return None


def _capability_exceeds(child: CapabilityGrant, grants: tuple[CapabilityGrant, ...]) -> str | None:
    """None if one of `grants` covers `child`, else which part of it exceeds."""
    named = [g for g in grants if name_within(child.name, g.name)]
    if not named:
        return "name"
    constraints = dict(child.params)
    first: str | None = None
    for grant in named:
        missing = next(
            (p for p, c in grant.params if p not in constraints or not within(constraints[p], c)),
            None,
        )
        if missing is None:
            return None
        first = first or join("params", missing)
    return first


def _proxy_exceeds(child: ProxyGrant, grants: tuple[ProxyGrant, ...]) -> str | None:
    mine = [g for g in grants if g.service == child.service]
    if not mine:
        return "service"
    for j, method in enumerate(sorted(child.methods)):
        if not any(method in g.methods for g in mine):
            return join("methods", j)
    for k, glob in enumerate(child.paths):
        for method in child.methods:
            if not any(method in g.methods and any(glob_within(glob, p) for p in g.paths)
                       for g in mine):
                return join("paths", k)
    return None


def name_within(child: str, parent: str) -> bool:
    """True if every name the glob `child` matches is matched by the glob `parent`.

    Name globs have `*` as their only wildcard, and a parent's literal characters are never
    `*`; so matching the child's text, its `*`s as characters, against the parent puts each of
    them inside a `*` of the parent, which takes whatever the child's `*` stands for."""
    return fnmatchcase(child, parent)


def glob_within(child: PathGlob, parent: PathGlob) -> bool:
    """True if every path the glob `child` matches is matched by `parent` (conservative: a
    false answer may be wrong, a true one never is).

    A child without `**` is matched segment by segment, its `*`s as characters, by the parent
    (as with names, each falls within a `*` or `**` of the parent). A child with `**` is within
    the same pattern, or within a parent that is literal-or-`*` segments then one final `**`
    and whose segments take the child's leading ones."""
    if child.pattern == parent.pattern:
        return True
    segments = tuple(child.pattern[1:].split("/")) if child.pattern != "/" else ()
    if len(child.runs) == 1:
        return parent.matches(CanonicalPath(segments))
    head = tuple(parent.runs[0])
    if len(parent.runs) != 2 or parent.runs[1] != ():
        return False
    lead = segments[: segments.index("**")]
    return len(lead) >= len(head) and all(s.matches(t) for s, t in zip(head, lead, strict=False))


def within(child: Constraint, parent: Constraint) -> bool:
    """True if every value `child` accepts, `parent` accepts (conservative)."""
    if child == parent:
        return True
    if child.one_of is not None:  # only the listed values the child itself accepts count
        accepted = [v for v in child.one_of if constraint_problem(child, v) is None]
        return all(constraint_problem(parent, v) is None for v in accepted)
    checks = (
        parent.one_of is None,
        parent.pattern is None or child.pattern == parent.pattern,
        parent.prefix is None
        or (child.prefix is not None and child.prefix.startswith(parent.prefix)),
        parent.max_length is None or _at_most(child.max_length, parent.max_length),
        parent.minimum is None or _at_least(child.minimum, parent.minimum),
        parent.maximum is None or _at_most(child.maximum, parent.maximum),
    )
    return all(checks)


def _at_most(value: float | None, bound: float) -> bool:
    return value is not None and value <= bound


def _at_least(value: float | None, bound: float) -> bool:
    return value is not None and value >= bound


def chain_layers(agent: Agent, scopes: Iterable[Scope]) -> Iterator[Layer]:
    """The layers a new token must fit in: the agent's grants, then each scope above it."""
    yield agent_layer(agent)
    for scope in scopes:
        yield scope_layer(scope)


class ScopeCache:
    """Scopes read against one config, by their stored text: a request made with a derived
    token reads each scope of its chain once per config, not once per request."""

    MAX_ENTRIES = 4096

    def __init__(self) -> None:
        self._config: Config | None = None
        self._scopes: dict[str, Scope] = {}

    def get(self, text: str, config: Config) -> Scope:
        """The scope `text` reads as under `config` (a reload starts afresh)."""
        if config is not self._config or len(self._scopes) >= self.MAX_ENTRIES:
            self._config, self._scopes = config, {}
        scope = self._scopes.get(text)
        if scope is None:
            scope = self._scopes[text] = load_scope(text, config)
        return scope


# How long before a configured agent token's `expires` the operator is warned.
EXPIRY_WARNING = 14 * 86400


def expiring_agents(config: Config, now: float) -> list[tuple[str, float, bool]]:
    """`(agent, expires, expired)` for each configured agent token that is past its `expires`
    or will be within `EXPIRY_WARNING`, by agent name."""
    return [
        (name, agent.expires, agent.expires <= now)
        for name, agent in sorted(config.agents.items())
        if agent.expires is not None and agent.expires - now <= EXPIRY_WARNING
    ]
