"""Shorthands the catalog modules use to write capabilities compactly."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from turret.model import Capability, Each, Field, Projection, Shape

if TYPE_CHECKING:
    from turret.model import Service


def fields(**paths: str | Projection) -> Shape:
    """A result shape: each keyword is an output key, its value a dotted path or projection."""
    return Shape(
        tuple(
            (key, Field(tuple(value.split("."))) if isinstance(value, str) else value)
            for key, value in paths.items()
        )
    )


def each(path: str, item: Shape, limit: int | None = None, require: tuple[str, ...] = ()) -> Each:
    """Project every item of the list at `path` ("" for the answer itself); with `require`,
    only the items that have a value at each of those dotted paths."""
    return Each(
        tuple(path.split(".")) if path else (),
        item,
        limit,
        tuple(tuple(r.split(".")) for r in require),
    )


def capability(service: Service, kind: str, action: str, **spec: Any) -> Capability:
    """A catalog capability of `service`, named `<service>.<action>`."""
    return Capability(
        name=f"{service.name}.{action}", service=service.name, origin=f"catalog:{kind}", **spec
    )
