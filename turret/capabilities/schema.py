"""Parameter checking and JSON Schema: what a capability accepts, narrowed by what an agent may use.

Checks are strict: no extra parameters, no numbers as strings, no booleans for numbers, and no
CR, LF, NUL or compatibility characters (fullwidth digits and the like) in a value that lands in
a path, query, header or form field. Messages name the parameter and never repeat its value.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from turret.capabilities.strictjson import shown_key
from turret.capabilities.template import TEXT_PLACES, placements
from turret.errors import BadRequest, UnprocessableEntity
from turret.model import JSON, PARAM_NAME, Capability, Constraint, Param, ParamValue

_CONTROLS = ("\r", "\n", "\0")


@lru_cache(maxsize=1024)
def compiled(pattern: str) -> re.Pattern[str]:
    """A config pattern, compiled once; classes such as \\d match ASCII only."""
    return re.compile(pattern, re.ASCII)


def same_value(a: JSON, b: JSON) -> bool:
    """JSON equality: True is not 1, 1 is 1.0."""
    return isinstance(a, bool) == isinstance(b, bool) and a == b


def validate_params(capability: Capability, raw: Mapping[str, JSON]) -> dict[str, ParamValue]:
    """The parameters of a call, checked against the capability's schema; defaults filled in."""
    for key in raw:
        if not PARAM_NAME.fullmatch(key):
            raise BadRequest(
                f"parameter name {shown_key(key)} is not allowed: names match {PARAM_NAME.pattern}"
            )
    for key in sorted(raw):
        if capability.param(key) is None:
            raise UnprocessableEntity(f"params.{key}: {capability.name} has no such parameter")
    places = placements(capability)
    out: dict[str, ParamValue] = {}
    for param in capability.params:
        if param.name in raw:
            out[param.name] = _checked(param, raw[param.name], places[param.name])
        elif param.default is not None:
            out[param.name] = param.default
        elif param.required:
            raise UnprocessableEntity(f"params.{param.name}: is required")
    problem = capability.check(out) if capability.check else None
    if problem:
        raise UnprocessableEntity(f"params.{problem[0]}: {problem[1]}")
    return out


def value_problem(capability: Capability, name: str, value: JSON) -> str | None:
    """Why the parameter `name` of `capability` could never accept `value`, or None."""
    param = capability.param(name)
    if param is None:
        return f"{capability.name} has no such parameter"
    places = placements(capability).get(name, frozenset())
    return _type_problem(param, value) or _schema_problem(param, value, places)


def _checked(param: Param, value: JSON, places: frozenset[str]) -> ParamValue:
    problem = _type_problem(param, value) or _schema_problem(param, value, places)
    if problem:
        raise UnprocessableEntity(f"params.{param.name}: {problem}")
    assert isinstance(value, str | int | float | bool)  # noqa: S101 - _type_problem checked it
    return value


def _type_problem(param: Param, value: JSON) -> str | None:
    kind = {
        "string": "a string",
        "integer": "an integer",
        "number": "a number",
        "boolean": "true or false",
    }[param.type]
    if value is None:
        return f"must be {kind}, not null"
    ok = {
        "string": isinstance(value, str),
        "integer": isinstance(value, int) and not isinstance(value, bool),
        "number": isinstance(value, int | float) and not isinstance(value, bool),
        "boolean": isinstance(value, bool),
    }[param.type]
    if ok:
        return None
    given = {str: "a string", bool: "a boolean", float: "a fraction"}.get(
        type(value), "a " + type(value).__name__
    )
    if isinstance(value, dict | list):
        given = "an object or list"
    return f"must be {kind}, not {given}"


def _schema_problem(param: Param, value: JSON, places: frozenset[str]) -> str | None:
    if isinstance(value, str):
        if problem := _text_problem(value, places):
            return problem
        if param.segments > 1 and len(value.split("/")) != param.segments:
            return f"must be {param.segments} parts separated by '/'"
        if param.parse is not None and (problem := param.parse(value)):
            return problem
    if isinstance(value, float) and not math.isfinite(value):
        return "must be a finite number"
    limits = Constraint(
        one_of=param.one_of,
        pattern=param.pattern,
        max_length=param.max_length,
        minimum=param.minimum,
        maximum=param.maximum,
    )
    assert isinstance(value, str | int | float | bool)  # noqa: S101 - type checked before
    return constraint_problem(limits, value)


def _text_problem(value: str, places: frozenset[str]) -> str | None:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "is not valid Unicode text"
    if places & TEXT_PLACES:
        if any(c in value for c in _CONTROLS):
            return "must not contain CR, LF or NUL"
        if unicodedata.normalize("NFKC", value) != value:
            return "must not contain compatibility characters such as fullwidth digits"
    return None


def constraint_problem(c: Constraint, value: ParamValue) -> str | None:
    """Why `value` breaks constraint `c`, or None if it meets every part of it."""
    if c.one_of is not None and not any(same_value(value, v) for v in c.one_of):
        return "is not one of the allowed values"
    if isinstance(value, str):
        if c.pattern is not None and not compiled(c.pattern).fullmatch(value):
            return f"does not match the pattern {c.pattern}"
        if c.prefix is not None and not value.startswith(c.prefix):
            return f"must start with {c.prefix!r}"
        if c.max_length is not None and len(value) > c.max_length:
            return f"is longer than {c.max_length} characters"
    elif not isinstance(value, bool):
        if c.minimum is not None and value < c.minimum:
            return f"is less than {c.minimum:g}"
        if c.maximum is not None and value > c.maximum:
            return f"is more than {c.maximum:g}"
    return None


# --- JSON Schema ---------------------------------------------------------------------------------

_JS_SPECIAL = set("\\^$.|?*+()[]{}/-")


def _anchored(pattern: str) -> str:
    return f"^(?:{pattern})$"


def _literal_prefix(prefix: str) -> str:
    return "^" + "".join("\\" + c if c in _JS_SPECIAL else c for c in prefix)


def param_schema(param: Param) -> dict[str, Any]:
    """The JSON Schema of one parameter as the capability defines it."""
    schema: dict[str, Any] = {"type": param.type}
    if param.description:
        schema["description"] = param.description
    if param.one_of is not None:
        schema["enum"] = list(param.one_of)
    if param.pattern is not None:
        schema["pattern"] = _anchored(param.pattern)
    if param.max_length is not None:
        schema["maxLength"] = param.max_length
    if param.minimum is not None:
        schema["minimum"] = param.minimum
    if param.maximum is not None:
        schema["maximum"] = param.maximum
    if param.default is not None:
        schema["default"] = param.default
    return schema


def narrowed(schema: dict[str, Any], c: Constraint) -> dict[str, Any]:
    """`schema` with constraint `c` added: the values both accept."""
    out = dict(schema)
    if c.one_of is not None:
        allowed = [v for v in c.one_of if constraint_problem(c, v) is None]
        if "enum" in out:
            allowed = [v for v in out["enum"] if any(same_value(v, w) for w in allowed)]
        out["enum"] = allowed
    patterns = [_anchored(c.pattern)] if c.pattern is not None else []
    if c.prefix is not None:
        patterns.append(_literal_prefix(c.prefix))
    if patterns:
        out["allOf"] = [*out.get("allOf", []), *({"pattern": p} for p in patterns)]
    for key, value, pick in (
        ("maxLength", c.max_length, min),
        ("minimum", c.minimum, max),
        ("maximum", c.maximum, min),
    ):
        if value is not None:
            out[key] = pick(out[key], value) if key in out else value
    return out


def capability_schema(
    capability: Capability, grants: list[Mapping[str, Constraint]]
) -> dict[str, Any]:
    """The JSON Schema for the call's parameters, narrowed by the grants that allow it.

    The schema is honest: every call it admits passes the parameter checks and one of the
    grants. A parameter a grant constrains is required (an absent one fails the constraint)
    unless its default meets it. Several grants combine exactly when they differ in at most
    one parameter (that one gets the `anyOf` of what they allow); otherwise the schema is the
    first grant's, a part of what the agent may do, never more.
    """
    combined = _combined([dict(g) for g in grants])
    properties: dict[str, Any] = {}
    required = []
    for param in capability.params:
        variants = combined.get(param.name)
        if variants is None:
            properties[param.name] = param_schema(param)
            optional = not param.required or param.default is not None
        else:
            schemas = [_constrained(param, c) for c in variants]
            distinct = [v for i, v in enumerate(schemas) if v not in schemas[:i]]
            one = {"anyOf": distinct, "type": param.type} if len(distinct) > 1 else distinct[0]
            properties[param.name] = one
            optional = any(_default_meets(param, c) for c in variants)
        if not optional:
            required.append(param.name)
    return {
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": False,
    }


def _combined(grants: list[dict[str, Constraint]]) -> dict[str, list[Constraint]]:
    """Per parameter, the constraints one of which a call must meet; absent: unconstrained."""
    distinct = [g for i, g in enumerate(grants) if g not in grants[:i]]
    if not distinct or any(not g for g in distinct):
        return {}  # no grant, or one that allows every call of the capability
    names = sorted({n for g in distinct for n in g})
    differing = [n for n in names if len({repr(g.get(n)) for g in distinct}) > 1]
    if len(differing) > 1:
        distinct = distinct[:1]  # no exact product schema: list the first grant's calls only
    out: dict[str, list[Constraint]] = {}
    for name in names:
        found = [g.get(name) for g in distinct]
        if all(c is not None for c in found):
            out[name] = [c for c in found if c is not None]
    return out


def _default_meets(param: Param, c: Constraint) -> bool:
    return param.default is not None and constraint_problem(c, param.default) is None


def _constrained(param: Param, c: Constraint) -> dict[str, Any]:
    schema = narrowed(param_schema(param), c)
    if param.default is not None and not _default_meets(param, c):
        del schema["default"]  # the default would be refused: the parameter must be given
    return schema
