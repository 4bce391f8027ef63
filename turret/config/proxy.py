"""Reading a proxy grant `{service, methods, paths}`: an agent's, a group's, or a deny rule."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from turret.config.checker import Checker
from turret.config.yamlload import join
from turret.model import METHODS, ProxyGrant, Service
from turret.paths import compile_glob


def read_proxy_grant(
    ck: Checker, path: str, value: Any, services: Mapping[str, Service]
) -> ProxyGrant | None:
    """A proxy grant `{service, methods, paths}` (also the shape of a proxy deny rule)."""
    g = ck.mapping(path, value, {"service", "methods", "paths"}, set())
    if g is None:
        return None
    service = ck.string(join(path, "service"), g.get("service"))
    if service is not None and service not in services:
        ck.fail(join(path, "service"), f"names undefined service {service!r}")
        service = None
    methods, paths, ok = set(), [], True
    method_items = ck.items(join(path, "methods"), g.get("methods", []))
    for p, m in method_items:
        # isinstance first: a YAML list or mapping here is unhashable, and must be an error
        # message, not a TypeError (which would also end a running Turret on reload).
        if not isinstance(m, str) or m not in METHODS:
            ck.fail(p, f"must be one of {', '.join(sorted(METHODS))}")
            ok = False
        else:
            methods.add(m)
    path_items = ck.items(join(path, "paths"), g.get("paths", []))
    for p, pattern in path_items:
        try:
            paths.append(compile_glob(pattern if isinstance(pattern, str) else ""))
        except ValueError as exc:
            ck.fail(p, f"path glob {exc}")
            ok = False
    if not method_items or not path_items:
        ck.fail(path, "a grant needs at least one method and one path")
        ok = False
    if service is None or not ok:
        return None
    return ProxyGrant(service, frozenset(methods), tuple(paths))
