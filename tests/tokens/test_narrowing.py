"""The narrowing check, as properties: a child the check lets be minted allows nothing its
parent denies, whatever the grants, and the chain of scopes keeps that true after the agent's
grants change on reload."""

from __future__ import annotations

from fnmatch import fnmatchcase

from hypothesis import given, settings
from hypothesis import strategies as st

from turret.capabilities.schema import constraint_problem
from turret.model import (
    Action,
    Agent,
    Capability,
    CapabilityAction,
    CapabilityGrant,
    Constraint,
    Param,
    ProxyAction,
    ProxyGrant,
    Template,
)
from turret.paths import CanonicalPath, compile_glob
from turret.policy import decide
from turret.principal import Principal, Source
from turret.tokens import (
    Scope,
    ScopeRestriction,
    agent_layer,
    exceeding,
    glob_within,
    name_within,
    scope_layer,
    within,
)

SERVICES = ("s", "t")
CAPS = {
    name: Capability(
        name, name.split(".")[0], "d",
        (Param("n", "integer"), Param("w", "string")),
        Template("GET", "/x"),
    )
    for name in ("s.read", "s.write", "t.read")
}
SEGMENTS = ("a", "b", "ab")

segment_globs = st.sampled_from(("a", "b", "ab", "*", "a*", "*b", "**"))
path_globs = st.lists(segment_globs, min_size=1, max_size=3).map(lambda s: "/" + "/".join(s))
methods = st.frozensets(st.sampled_from(("GET", "POST")), min_size=1)
proxy_grants = st.builds(
    lambda svc, ms, ps: ProxyGrant(svc, ms, tuple(compile_glob(p) for p in ps)),
    st.sampled_from(SERVICES), methods, st.lists(path_globs, min_size=1, max_size=2),
)
name_globs = st.sampled_from(("s.read", "s.write", "t.read", "s.*", "*", "*.read", "s.re*"))
number_constraints = st.builds(
    lambda lo, hi, one: Constraint(one_of=one, minimum=lo, maximum=hi),
    st.none() | st.integers(0, 5), st.none() | st.integers(3, 9),
    st.none() | st.lists(st.integers(0, 9), min_size=1, max_size=3).map(tuple),
)
string_constraints = st.builds(
    lambda prefix, length, one: Constraint(one_of=one, prefix=prefix, max_length=length),
    st.none() | st.sampled_from(("", "a", "ab")), st.none() | st.integers(1, 4),
    st.none() | st.lists(st.sampled_from(("a", "ab", "b", "abc")), min_size=1, max_size=2)
    .map(tuple),
)
cap_grants = st.builds(
    lambda name, n, w: CapabilityGrant(
        name, tuple((p, c) for p, c in (("n", n), ("w", w)) if c is not None), "r"
    ),
    name_globs, st.none() | number_constraints, st.none() | string_constraints,
)
scopes = st.builds(
    lambda caps, proxy: Scope(tuple(caps), tuple(proxy), {}),
    st.lists(cap_grants, max_size=3), st.lists(proxy_grants, max_size=3),
)
agents = st.builds(
    lambda caps, proxy: Agent("a", "0" * 64, None, tuple(proxy), tuple(caps)),
    st.lists(cap_grants, max_size=3), st.lists(proxy_grants, max_size=3),
)
proxy_actions = st.builds(
    lambda svc, m, segs: ProxyAction(svc, m, CanonicalPath(tuple(segs))),
    st.sampled_from(SERVICES), st.sampled_from(("GET", "POST")),
    st.lists(st.sampled_from(SEGMENTS), max_size=4),
)
cap_actions = st.builds(
    lambda name, n, w: CapabilityAction(CAPS[name], {"n": n, "w": w}),
    st.sampled_from(sorted(CAPS)), st.integers(0, 9), st.sampled_from(("", "a", "ab", "abc", "b")),
)
actions = st.lists(proxy_actions | cap_actions, min_size=1, max_size=20)


def _allowed(agent: Agent, chain: list[Scope], action: Action) -> bool:
    restrictions = tuple(ScopeRestriction(f"t{i}", s) for i, s in enumerate(chain))
    return decide(Principal(agent, Source.DERIVED, "t", restrictions), action, SERVICES).allowed


@settings(max_examples=400, deadline=None)
@given(agents, st.none() | scopes, scopes, actions)
def test_narrowing_minted_child_never_allowed_what_parent_denies(
    agent: Agent, middle: Scope | None, child: Scope, tried: list[Action]
) -> None:
    """A child the check accepts, taken alone (no use-time intersection), is within its
    parent: the agent's grants and the middle token's scope."""
    chain = [middle] if middle is not None else []
    if exceeding(child, [agent_layer(agent), *map(scope_layer, chain)]) is not None:
        return
    for action in tried:
        if ScopeRestriction("c", child).refusal(action) is None:
            assert _allowed(agent, chain, action), action


@settings(max_examples=300, deadline=None)
@given(agents, agents, scopes, scopes, actions)
def test_narrowing_holds_after_the_parent_changes_on_reload(
    before: Agent, after: Agent, parent: Scope, child: Scope, tried: list[Action]
) -> None:
    """Whatever the agent's grants become, the child's chain (its scope and its parent's) is
    asked at each use: the child is never allowed what the parent is denied."""
    for agent in (before, after):
        for action in tried:
            if _allowed(agent, [parent, child], action):
                assert _allowed(agent, [parent], action)


@settings(max_examples=200, deadline=None)
@given(agents)
def test_narrowing_accepts_the_parent_own_grants(agent: Agent) -> None:
    """Asking for exactly what the agent has is never refused (the check is not vacuous)."""
    own = Scope(agent.capabilities, agent.proxy, {})
    assert exceeding(own, [agent_layer(agent)]) is None


@given(path_globs, path_globs, st.lists(st.sampled_from((*SEGMENTS, "*")), max_size=5))
def test_glob_within_is_sound(child: str, parent: str, segs: list[str]) -> None:
    c, p = compile_glob(child), compile_glob(parent)
    path = CanonicalPath(tuple(segs))
    if glob_within(c, p) and c.matches(path):
        assert p.matches(path)


@given(name_globs, name_globs, st.sampled_from((*CAPS, "s.", "s.*x", "u.read")))
def test_name_within_is_sound(child: str, parent: str, name: str) -> None:
    if name_within(child, parent) and fnmatchcase(name, child):
        assert fnmatchcase(name, parent)


@given(number_constraints, number_constraints, st.integers(0, 9))
def test_number_constraint_within_is_sound(child: Constraint, parent: Constraint, n: int) -> None:
    if within(child, parent) and constraint_problem(child, n) is None:
        assert constraint_problem(parent, n) is None


@given(string_constraints, string_constraints, st.sampled_from(("", "a", "ab", "abc", "b")))
def test_string_constraint_within_is_sound(child: Constraint, parent: Constraint, w: str) -> None:
    if within(child, parent) and constraint_problem(child, w) is None:
        assert constraint_problem(parent, w) is None
