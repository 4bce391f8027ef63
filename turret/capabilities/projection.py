"""Result projection: the few fields of an upstream answer an agent gets back."""

from __future__ import annotations

from turret.model import JSON, Each, Field, Projection, Shape


def pick(data: JSON, path: tuple[str, ...]) -> JSON:
    """The value at a dotted path; a number indexes a list. Missing parts give None."""
    for key in path:
        if isinstance(data, dict):
            data = data.get(key)
        elif isinstance(data, list) and key.isdigit() and int(key) < len(data):
            data = data[int(key)]
        else:
            return None
    return data


def project(spec: Projection, data: JSON) -> JSON:
    """Apply a projection to decoded upstream JSON."""
    if isinstance(spec, Field):
        return pick(data, spec.path)
    if isinstance(spec, Each):
        items = pick(data, spec.path)
        if not isinstance(items, list):
            return []
        items = [i for i in items if all(pick(i, path) is not None for path in spec.require)]
        if spec.limit is not None:
            items = items[: spec.limit]
        return [project(spec.item, item) for item in items]
    return {key: project(inner, data) for key, inner in spec.fields}


def needs_body(spec: Shape | None) -> bool:
    """True if the projection reads anything from the upstream body."""
    return spec is not None and bool(spec.fields)
