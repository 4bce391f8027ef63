"""Config readers shared by capability definitions and grants: constraints and result shapes."""

from __future__ import annotations

import re
from typing import Any, Literal

from turret.capabilities.schema import compiled
from turret.config.checker import Checker
from turret.config.yamlload import join
from turret.model import JSON, Constraint, Each, Field, Projection, Shape

CONSTRAINT_KEYS = ("one_of", "pattern", "prefix", "max_length", "minimum", "maximum")
_STRING_ONLY = {"pattern", "prefix", "max_length"}
_NUMBER_ONLY = {"minimum", "maximum"}
_DOTTED = re.compile(r"[A-Za-z0-9_$@-]+(\.[A-Za-z0-9_$@-]+)*")
_OUT_KEY = re.compile(r"[A-Za-z0-9_.-]{1,64}")


def fits_type(value: JSON, kind: str) -> bool:
    """True if `value` is a value of parameter type `kind`."""
    if kind == "string":
        return isinstance(value, str)
    if kind == "boolean":
        return isinstance(value, bool)
    numeric = isinstance(value, int | float) and not isinstance(value, bool)
    return numeric and (kind == "number" or isinstance(value, int))


def read_grant_constraint(
    ck: Checker, path: str, value: Any, kind: str | None
) -> Constraint | None:
    """A grant's constraint on one parameter: a mapping of at least one constraint key."""
    spec = ck.mapping(path, value, set(), set(CONSTRAINT_KEYS))
    if spec is None:
        return None
    if not spec:
        ck.fail(path, f"needs at least one of {', '.join(CONSTRAINT_KEYS)}")
        return None
    if kind is None:
        ck.fail(path, "the parameter has different types in the capabilities matched")
        return None
    return read_constraints(ck, path, spec, kind)


def read_constraints(ck: Checker, path: str, spec: dict[str, Any], kind: str) -> Constraint | None:
    """The constraint keys found in `spec`, checked against the parameter type `kind`."""
    ok = True
    for key in CONSTRAINT_KEYS:
        if key not in spec:
            continue
        problem = _problem(key, spec[key], kind)
        if problem:
            ck.fail(join(path, key), problem)
            ok = False
    if not ok:
        return None
    one_of = spec.get("one_of")
    return Constraint(
        one_of=tuple(one_of) if one_of is not None else None,
        pattern=spec.get("pattern"),
        prefix=spec.get("prefix"),
        max_length=spec.get("max_length"),
        minimum=spec.get("minimum"),
        maximum=spec.get("maximum"),
    )


def _problem(key: str, value: Any, kind: str) -> str | None:
    if key in _STRING_ONLY and kind != "string":
        return f"applies to strings only, and this parameter is {kind}"
    if key in _NUMBER_ONLY and kind not in ("integer", "number"):
        return f"applies to numbers only, and this parameter is {kind}"
    if key == "one_of":
        if not isinstance(value, list) or not value or not all(fits_type(v, kind) for v in value):
            return f"must be a non-empty list of {kind} values"
    elif key == "pattern":
        if not isinstance(value, str) or not value:
            return "must be a non-empty regular expression"
        try:
            compiled(value)
        except re.error as exc:
            return f"is not a valid regular expression: {exc}"
    elif key == "prefix":
        if not isinstance(value, str) or not value:
            return "must be a non-empty string"
    elif key == "max_length":
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            return "must be a whole number, 0 or more"
    elif isinstance(value, bool) or not isinstance(value, int | float):
        return "must be a number"
    return None


def read_result(ck: Checker, path: str, value: Any) -> Shape | Literal[False] | None:
    """`result:` as a projection: a list of dotted paths, or a mapping of key to path or
    `{each: PATH, fields: RESULT, limit: N}`. None if absent, False if invalid."""
    if value is None:
        return None
    shape = _shape(ck, path, value)
    return shape if shape is not None else False


def _shape(ck: Checker, path: str, value: Any) -> Shape | None:
    if isinstance(value, list):
        value = {item: item for item in value if isinstance(item, str)} | {
            f"[{i}]": item for i, item in enumerate(value) if not isinstance(item, str)
        }
    if not isinstance(value, dict) or not value:
        ck.fail(path, "must be a non-empty list of dotted paths or a mapping")
        return None
    fields = []
    for key, inner in value.items():
        where = join(path, key)
        projection = _projection(ck, where, inner)
        if not _OUT_KEY.fullmatch(key):
            ck.fail(where, f"result key must match {_OUT_KEY.pattern}")
        elif projection is not None:
            fields.append((key, projection))
    return Shape(tuple(fields)) if len(fields) == len(value) else None


def _projection(ck: Checker, path: str, value: Any) -> Projection | None:
    if isinstance(value, str):
        if not _DOTTED.fullmatch(value):
            ck.fail(path, "must be a dotted path such as data.status")
            return None
        return Field(tuple(value.split(".")))
    spec = ck.mapping(path, value, {"each", "fields"}, {"limit"})
    if spec is None:
        return None
    each = spec.get("each")
    if not isinstance(each, str) or not (each == "" or _DOTTED.fullmatch(each)):
        ck.fail(join(path, "each"), "must be a dotted path, or '' for the answer itself")
        return None
    limit = spec.get("limit")
    if limit is not None:
        limit = ck.number(join(path, "limit"), limit, 1, 10000, integer=True)
    item = _shape(ck, join(path, "fields"), spec.get("fields"))
    if item is None or ("limit" in spec and limit is None):
        return None
    return Each(tuple(each.split(".")) if each else (), item, limit)
