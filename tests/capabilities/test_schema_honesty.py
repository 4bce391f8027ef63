"""The schema `GET /v1/capabilities` lists is honest: any call built to it is allowed.

Hypothesis writes random grants (one or several per capability, constraining random parameters)
into a config, loads it as check-config would, and then generates calls that satisfy the listed
JSON Schema with a small generator for the subset of JSON Schema Turret emits. Every such call
must pass `validate_params` and `decide_capability`.
"""

from __future__ import annotations

import json
import re
import unicodedata
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from turret.capabilities.schema import (
    capability_schema,
    constraint_problem,
    param_schema,
    same_value,
    validate_params,
    value_problem,
)
from turret.config import load_config
from turret.errors import ConfigError
from turret.model import Capability, Config, Constraint, Param
from turret.policy import capability_grants, decide_capability

SERVICES = {
    "chat": {"kind": "matrix", "url": "https://matrix.example.org", "auth": {"bearer": "t1"}},
    "qbit": {
        "kind": "qbittorrent",
        "url": "http://127.0.0.1:8080",
        "auth": {"login": {"username": "admin", "password": {"credential": "t2"}}},
        "magnet": {"trackers": ["https://tracker.example/announce"]},
    },
    "pve": {
        "kind": "proxmox",
        "url": "https://pve.lan:8006",
        "node": "pve1",
        "auth": {"bearer": "t3"},
    },
    "home": {"kind": "homeassistant", "url": "http://ha.lan:8123", "auth": {"bearer": "t4"}},
    "push": {"kind": "ntfy", "url": "https://ntfy.example.org", "auth": {"bearer": "t5"}},
}
CATALOG = load_config(
    yaml.safe_dump({"services": SERVICES, "agents": {"a": {"token_sha256": "a" * 64}}})
).capabilities
# A cross-parameter rule (Home Assistant's entity of the called domain) is beyond JSON Schema:
# its capability's description states it. Every other refusal must be visible in the schema.
NAMES = sorted(n for n, c in CATALOG.items() if c.check is None)
# Text that every place accepts: no CR, LF, NUL, surrogates or compatibility characters (the
# capability descriptions say so; JSON Schema cannot).
TEXT = st.text(
    st.characters(codec="utf-8", exclude_categories=["Cc", "Cs", "Cn", "Co"]), max_size=40
).filter(lambda s: unicodedata.normalize("NFKC", s) == s)


def _matches(pattern: str, value: str) -> bool:
    return re.search(pattern, value, re.ASCII) is not None


def valid(schema: dict[str, Any], value: Any) -> bool:
    """True if `value` satisfies `schema` (the keywords Turret's schemas use)."""
    if "anyOf" in schema:
        return any(valid({**v, "type": schema["type"]}, value) for v in schema["anyOf"])
    kind = schema["type"]
    typed = {
        "string": isinstance(value, str),
        "integer": isinstance(value, int) and not isinstance(value, bool),
        "number": isinstance(value, int | float) and not isinstance(value, bool),
        "boolean": isinstance(value, bool),
    }[kind]
    patterns = [schema["pattern"]] if "pattern" in schema else []
    patterns += [p["pattern"] for p in schema.get("allOf", [])]
    return (
        typed
        and ("enum" not in schema or any(same_value(value, v) for v in schema["enum"]))
        and all(_matches(p, value) for p in patterns)
        and ("maxLength" not in schema or len(value) <= schema["maxLength"])
        and ("minimum" not in schema or value >= schema["minimum"])
        and ("maximum" not in schema or value <= schema["maximum"])
    )


def values(schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Values satisfying one property's schema."""
    if "anyOf" in schema:
        return st.one_of([values({**v, "type": schema["type"]}) for v in schema["anyOf"]])
    kind = schema["type"]
    base: st.SearchStrategy[Any]
    if "enum" in schema:
        base = st.sampled_from(schema["enum"])
    elif kind == "string" and ("pattern" in schema or schema.get("allOf")):
        first = schema.get("pattern") or schema["allOf"][0]["pattern"]
        base = st.from_regex(re.compile(first, re.ASCII), fullmatch=True)
    elif kind == "string":
        base = TEXT
    elif kind == "boolean":
        base = st.booleans()
    else:
        lo, hi = schema.get("minimum"), schema.get("maximum")
        base = (
            st.integers(lo, hi)
            if kind == "integer"
            else st.floats(lo, hi, allow_nan=False, allow_infinity=False)
        )
    return base.filter(lambda v: valid(schema, v))


@st.composite
def calls(draw: st.DrawFn, schema: dict[str, Any]) -> dict[str, Any]:
    """A call's parameters following the object schema: required ones always, others maybe."""
    out = {}
    for name, prop in schema["properties"].items():
        if name in schema["required"] or draw(st.booleans()):
            out[name] = draw(values(prop))
    return out


def _accepted(cap: Capability, param: Param) -> st.SearchStrategy[Any]:
    """Values the parameter itself accepts, for a grant's one_of."""
    return values(param_schema(param)).filter(lambda v: value_problem(cap, param.name, v) is None)


@st.composite
def constraint(draw: st.DrawFn, cap: Capability, param: Param) -> dict[str, Any]:
    """A grant's constraint on `param` that check-config accepts."""
    options = ["one_of"]
    if param.type in ("integer", "number"):
        options += ["minimum", "maximum"]
    if param.type == "string" and param.pattern is None:
        options += ["max_length", "prefix"]
    spec: dict[str, Any] = {}
    keys = draw(st.lists(st.sampled_from(options), min_size=1, max_size=2, unique=True))
    for key in ["one_of"] if "one_of" in keys else keys:  # check-config: values meet the rest
        if key == "one_of":
            spec[key] = draw(st.lists(_accepted(cap, param), min_size=1, max_size=3))
        elif key == "max_length":
            spec[key] = draw(st.integers(1, 20))
        elif key == "prefix":
            spec[key] = draw(st.sampled_from(["a", "ops-", "x.y"]))
        else:
            lo = param.minimum if param.minimum is not None else -100
            hi = param.maximum if param.maximum is not None else 100
            spec[key] = draw(st.integers(int(lo), int(min(hi, lo + 1000))))
    if spec.get("minimum", -math_inf) > spec.get("maximum", math_inf):
        spec["minimum"], spec["maximum"] = spec["maximum"], spec["minimum"]
    return spec


math_inf = float("inf")


@st.composite
def configs(draw: st.DrawFn) -> tuple[Config, Capability]:
    """A config whose agent has 1-3 grants for one catalog capability, some constrained."""
    cap = CATALOG[draw(st.sampled_from(NAMES))]
    grants = []
    for _ in range(draw(st.integers(1, 3))):
        chosen = draw(st.lists(st.sampled_from(cap.params), max_size=3, unique=True))
        params = {p.name: draw(constraint(cap, p)) for p in chosen}
        grants.append({"name": cap.name, "params": params} if params else cap.name)
    agent = {"token_sha256": "a" * 64, "capabilities": grants}
    # JSON is YAML, and much faster to write than PyYAML's emitter.
    text = json.dumps({"services": SERVICES, "agents": {"a": agent}}, ensure_ascii=False)
    try:
        return load_config(text), cap
    except ConfigError as exc:  # the generator only writes what check-config accepts
        raise AssertionError(exc.issues) from None


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_schema_listed_calls_are_never_refused(data: st.DataObject) -> None:
    config, cap = data.draw(configs())
    agent = config.agents["a"]
    schema = capability_schema(cap, [dict(g.params) for g in capability_grants(agent, cap.name)])
    params = data.draw(calls(schema))
    checked = validate_params(cap, params)
    decision = decide_capability(agent, cap, checked)
    assert decision.allowed, (schema, params, decision.reason)


def test_schema_constrained_parameter_is_required_with_its_enum() -> None:
    cap = CATALOG["qbit.list_torrents"]
    schema = capability_schema(cap, [{"category": Constraint(one_of=("linux-isos",))}])
    assert schema["required"] == ["category"]
    assert schema["properties"]["category"]["enum"] == ["linux-isos"]


def test_schema_default_that_breaks_the_constraint_makes_the_parameter_required() -> None:
    cap = CATALOG["chat.read_messages"]
    small = capability_schema(cap, [{"limit": Constraint(maximum=10)}])
    assert "limit" in small["required"] and "default" not in small["properties"]["limit"]
    large = capability_schema(cap, [{"limit": Constraint(maximum=50)}])
    assert "limit" not in large["required"] and large["properties"]["limit"]["default"] == 20


def test_schema_grants_differing_in_two_parameters_list_the_first_only() -> None:
    cap = CATALOG["qbit.add_torrent"]
    first = {"category": Constraint(one_of=("a",)), "magnet": Constraint(max_length=100)}
    second = {"category": Constraint(one_of=("b",))}
    schema = capability_schema(cap, [first, second])
    assert schema["properties"]["category"]["enum"] == ["a"]
    assert schema["properties"]["magnet"]["maxLength"] == 100
    assert schema["required"] == ["magnet", "category"]


def test_config_grant_one_of_values_must_meet_the_grant_itself() -> None:
    agent = {
        "token_sha256": "a" * 64,
        "capabilities": [
            {"name": "qbit.list_torrents", "params": {"category": {"one_of": ["b"], "prefix": "a"}}}
        ],
    }
    try:
        load_config(yaml.safe_dump({"services": SERVICES, "agents": {"a": agent}}))
    except ConfigError as exc:
        (issue,) = exc.issues
        assert issue.path == "agents.a.capabilities[0].params.category.one_of[0]"
        assert "must start with 'a'" in issue.message
    else:
        raise AssertionError("loaded")


def test_schema_enum_keeps_only_values_the_grant_allows() -> None:
    cap = CATALOG["qbit.list_torrents"]
    schema = capability_schema(cap, [{"category": Constraint(one_of=("ab", "abcd"), max_length=3)}])
    assert schema["properties"]["category"]["enum"] == ["ab"]
    assert constraint_problem(Constraint(max_length=3), "abcd") is not None
