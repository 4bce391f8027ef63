"""Reading the config's `capabilities:`, `groups:`, `audit:` and agents' capability rules.

Called by the config loader with its checker, so problems are reported like every other config
problem: dotted key path and line, all at once. The built-in catalog is expanded here, so a grant
or a deny naming a capability that does not exist is caught at load.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import replace
from fnmatch import fnmatchcase
from typing import Any, Literal

import turret.model as base
from turret.authkinds import Auth, LoginAuth
from turret.capabilities.catalog import KINDS, catalog_capabilities
from turret.capabilities.schema import constraint_problem, value_problem
from turret.capabilities.template import BODY_KINDS, template_problems
from turret.config.approvals import read_grant_approval
from turret.config.bind import BIND_KEYS, read_bind_settings
from turret.config.checker import Checker
from turret.config.constraints import (
    fits_type,
    read_constraints,
    read_grant_constraint,
    read_result,
)
from turret.config.leases import DERIVE_KEYS, read_derive_settings
from turret.config.proxy import read_proxy_grant
from turret.config.yamlload import join
from turret.model import (
    AGENT_GLOB,
    CAPABILITY_NAME,
    FIELD_NAME,
    NAME_GLOB,
    PARAM_NAME,
    PARAM_TYPES,
    Capability,
    CapabilityDeny,
    CapabilityGrant,
    Constraint,
    DenyRule,
    Group,
    Param,
    ProxyDeny,
    Template,
)

TRACKER_URL = re.compile(r"(https?|udp)://[!-~]{1,2040}")
_PARAM_KEYS = {
    "description",
    "required",
    "default",
    "one_of",
    "pattern",
    "minimum",
    "maximum",
    "max_length",
    "segments",
}


def read_kind_and_node(
    ck: Checker, path: str, svc: dict[str, Any], auth: Auth | None
) -> tuple[str | Literal[False] | None, str | None]:
    """A service's catalog `kind:` (False if invalid) and Proxmox `node:`."""
    kind: Any = svc.get("kind")  # YAML data: anything until checked
    if kind is not None and (not isinstance(kind, str) or kind not in KINDS):
        ck.fail(join(path, "kind"), f"must be one of {', '.join(sorted(KINDS))}")
        kind = False
    if isinstance(auth, LoginAuth) and kind != "qbittorrent":
        ck.fail(join(path, "auth"), "login auth is qBittorrent's: needs kind: qbittorrent")
    node = svc.get("node")
    if node is not None:
        node = ck.string(join(path, "node"), node, base.NAME)
        if kind != "proxmox":
            ck.fail(join(path, "node"), "node: is for services of kind: proxmox")
    return kind, node


def read_magnet(ck: Checker, path: str, svc: dict[str, Any], kind: Any) -> tuple[str, ...]:
    """`magnet: {trackers: [URL, ...]}`: the tracker URLs a qBittorrent magnet may carry."""
    if "magnet" not in svc:
        return ()
    spec = ck.mapping(path, svc["magnet"], set(), {"trackers"})
    if kind != "qbittorrent":
        ck.fail(path, "magnet: is for services of kind: qbittorrent")
    trackers = []
    for p, url in ck.items(join(path, "trackers"), (spec or {}).get("trackers", [])):
        if isinstance(url, str) and TRACKER_URL.fullmatch(url):
            trackers.append(url)
        else:
            ck.fail(p, "must be a tracker URL: http://, https:// or udp://, without spaces")
    return tuple(trackers)


def read_capabilities(
    ck: Checker, value: Any, services: Mapping[str, base.Service]
) -> dict[str, Capability]:
    """The catalog's capabilities for every service with a `kind:`, plus the user's own."""
    caps = {c.name: c for svc in services.values() for c in catalog_capabilities(svc)}
    for name, body in _entries(ck, "capabilities", value):
        path = join("capabilities", name)
        if name in caps:
            overlay = ck.mapping(path, body, set(), {"log_params"})
            if overlay is not None:
                caps[name] = replace(
                    caps[name], log_params=_log_params(ck, path, overlay, caps[name])
                )
            continue
        cap = _capability(ck, path, name, body, services)
        if cap is not None:
            caps[name] = cap
    return caps


def _entries(ck: Checker, path: str, value: Any) -> list[tuple[str, Any]]:
    if value is None:
        return []
    if not isinstance(value, dict):
        ck.fail(path, "must be a mapping")
        return []
    return list(value.items())


def _capability(
    ck: Checker, path: str, name: str, body: Any, services: Mapping[str, base.Service]
) -> Capability | None:
    spec = ck.mapping(
        path, body, {"service", "description", "request"}, {"params", "result", "log_params"}
    )
    if spec is None:
        return None
    service = ck.string(join(path, "service"), spec.get("service"))
    if service is not None and service not in services:
        ck.fail(join(path, "service"), f"names undefined service {service!r}")
    elif service is not None and not (
        CAPABILITY_NAME.fullmatch(name) and name.startswith(service + ".")
    ):
        ck.fail(path, f"a capability of service {service!r} is named {service}.<action>")
    description = ck.string(join(path, "description"), spec.get("description"))
    params = [
        _param(ck, join(join(path, "params"), n), n, b)
        for n, b in _entries(ck, join(path, "params"), spec.get("params"))
    ]
    request = _request(ck, join(path, "request"), spec.get("request"))
    result = read_result(ck, join(path, "result"), spec.get("result"))
    if None in (service, description, request) or None in params or result is False:
        return None
    assert service is not None and description is not None and request is not None  # noqa: S101
    cap = Capability(
        name,
        service,
        description,
        tuple(p for p in params if p is not None),
        request,
        result or None,
        origin=path,
    )
    for where, message in template_problems(cap):
        ck.fail(join(path, where), message)
    return replace(cap, log_params=_log_params(ck, path, spec, cap))


def _log_params(ck: Checker, path: str, spec: dict[str, Any], cap: Capability) -> tuple[str, ...]:
    names = []
    for p, name in ck.items(join(path, "log_params"), spec.get("log_params", [])):
        if not isinstance(name, str) or cap.param(name) is None:
            ck.fail(p, f"names no parameter of {cap.name}")
        else:
            names.append(name)
    return tuple(names)


def _param(ck: Checker, path: str, name: str, body: Any) -> Param | None:
    if not PARAM_NAME.fullmatch(name):
        ck.fail(path, f"parameter name must match {PARAM_NAME.pattern}")
    spec = ck.mapping(path, body, {"type"}, _PARAM_KEYS)
    if spec is None:
        return None
    kind = spec.get("type")
    if kind not in PARAM_TYPES:
        ck.fail(join(path, "type"), f"must be one of {', '.join(PARAM_TYPES)}")
        return None
    limits = read_constraints(ck, path, spec, kind)
    if limits is None:
        return None
    description = spec.get("description", "")
    required = spec.get("required", True)
    segments = spec.get("segments", 1)
    checks = [
        (isinstance(description, str), "description", "must be a string"),
        (isinstance(required, bool), "required", "must be true or false"),
        (
            isinstance(segments, int)
            and 1 <= segments <= 8
            and (kind == "string" or segments == 1),
            "segments",
            "must be an integer from 1 to 8, for a string",
        ),
    ]
    for ok, key, message in checks:
        if not ok:
            ck.fail(join(path, key), message)
            return None
    param = Param(
        name,
        kind,
        description,
        required,
        None,
        limits.one_of,
        limits.pattern,
        limits.minimum,
        limits.maximum,
        limits.max_length,
        segments,
    )
    if "default" in spec:
        default = spec["default"]
        if not fits_type(default, kind) or constraint_problem(limits, default):
            ck.fail(join(path, "default"), "must be a value the parameter accepts")
            return None
        param = replace(param, default=default)
    return param


def _request(ck: Checker, path: str, value: Any) -> Template | None:
    spec = ck.mapping(path, value, {"method", "path"}, {"query", "headers", *BODY_KINDS})
    if spec is None:
        return None
    method = spec.get("method")
    if not isinstance(method, str) or method not in base.METHODS:
        ck.fail(join(path, "method"), f"must be one of {', '.join(sorted(base.METHODS))}")
    url_path = ck.string(join(path, "path"), spec.get("path"))
    query = _texts(ck, join(path, "query"), spec.get("query"), base.QUERY_NAME)
    headers = _texts(ck, join(path, "headers"), spec.get("headers"), base.HEADER_NAME)
    bodies = [k for k in BODY_KINDS if k in spec]
    if len(bodies) > 1:
        ck.fail(path, "at most one of json, form, multipart")
        return None
    kind = bodies[0] if bodies else None
    body = spec.get(kind) if kind else None
    if kind in ("form", "multipart"):
        body = dict(_texts(ck, join(path, kind), body, FIELD_NAME))
    if not isinstance(method, str) or method not in base.METHODS or url_path is None:
        return None
    return Template(method, url_path, query, headers, kind, body)


def _texts(
    ck: Checker, path: str, value: Any, names: re.Pattern[str]
) -> tuple[tuple[str, str], ...]:
    out = []
    for name, text in _entries(ck, path, value):
        if not names.fullmatch(name):
            ck.fail(join(path, name), f"name must match {names.pattern}")
        elif not isinstance(text, str) or any(c in text for c in "\r\n\0"):
            ck.fail(join(path, name), "must be a string without CR, LF or NUL")
        else:
            out.append((name, text))
    return tuple(out)


# --- grants, deny rules, groups ------------------------------------------------------------------


def read_grants(
    ck: Checker, path: str, value: Any, caps: Mapping[str, Capability]
) -> tuple[CapabilityGrant, ...]:
    """Capability grants: a name glob, or `{name: GLOB, params: {PARAM: CONSTRAINT}}`."""
    grants = []
    for p, item in ck.items(path, value if value is not None else []):
        spec = (
            {"name": item}
            if isinstance(item, str)
            else ck.mapping(p, item, {"name"}, {"params", "approval"})
        )
        if spec is None:
            continue
        matched = _matching(ck, join(p, "name"), spec.get("name"), caps)
        constraints = []
        for pname, body in _entries(ck, join(p, "params"), spec.get("params")):
            where = join(join(p, "params"), pname)
            for cap in matched:
                param = cap.param(pname)
                if param is None:
                    ck.fail(where, f"{cap.name} has no parameter {pname!r}")
                    break
            else:
                kinds = {q.type for c in matched if (q := c.param(pname)) is not None}
                kind = kinds.pop() if len(kinds) == 1 else None
                c = read_grant_constraint(ck, where, body, kind)
                if c is not None and _one_of_fits(ck, where, pname, c, matched):
                    constraints.append((pname, c))
        approval = None
        if "approval" in spec:
            approval = read_grant_approval(ck, join(p, "approval"), spec["approval"], matched)
        if matched:
            grants.append(CapabilityGrant(spec["name"], tuple(constraints), p, approval))
    return tuple(grants)


def _one_of_fits(
    ck: Checker, path: str, pname: str, c: Constraint, matched: list[Capability]
) -> bool:
    """True if every `one_of` value is one the parameter itself and the constraint's other keys
    accept, in each capability the grant matches: else it would be listed yet always refused."""
    ok = True
    for i, value in enumerate(c.one_of or ()):
        for cap in matched:
            problem = value_problem(cap, pname, value) or constraint_problem(
                replace(c, one_of=None), value
            )
            if problem:
                ck.fail(join(join(path, "one_of"), i), f"{cap.name} never accepts it: it {problem}")
                ok = False
                break
    return ok


def _matching(
    ck: Checker, path: str, glob: Any, caps: Mapping[str, Capability]
) -> list[Capability]:
    if not isinstance(glob, str) or not NAME_GLOB.fullmatch(glob):
        ck.fail(path, f"must be a capability name or glob matching {NAME_GLOB.pattern}")
        return []
    matched = [c for n, c in sorted(caps.items()) if fnmatchcase(n, glob)]
    if not matched:
        ck.fail(path, f"{glob!r} matches no capability")
    return matched


def read_deny(
    ck: Checker,
    path: str,
    value: Any,
    caps: Mapping[str, Capability],
    services: Mapping[str, base.Service],
) -> tuple[DenyRule, ...]:
    """Deny rules: `{name: GLOB}` for capabilities, `{service, methods, paths}` for the proxy."""
    rules: list[DenyRule] = []
    for p, item in ck.items(path, value if value is not None else []):
        if isinstance(item, dict) and "service" in item:
            grant = read_proxy_grant(ck, p, item, services)
            if grant is not None:
                rules.append(ProxyDeny(grant.service, grant.methods, grant.paths, p))
            continue
        spec = ck.mapping(p, item, {"name"}, set())
        if spec is not None and _matching(ck, join(p, "name"), spec.get("name"), caps):
            rules.append(CapabilityDeny(spec["name"], p))
    return tuple(rules)


def read_groups(
    ck: Checker,
    value: Any,
    caps: Mapping[str, Capability],
    services: Mapping[str, base.Service],
) -> dict[str, Group]:
    """`groups:`: rules for every agent whose name matches one of the group's globs."""
    groups = {}
    for name, body in _entries(ck, "groups", value):
        path = join("groups", name)
        if not base.NAME.fullmatch(name):
            ck.fail(path, f"group name must match {base.NAME.pattern}")
        keys = {"capabilities", "deny", "proxy", *DERIVE_KEYS, *BIND_KEYS}
        spec = ck.mapping(path, body, {"agents"}, keys)
        if spec is None:
            continue
        globs = []
        for p, glob in ck.items(join(path, "agents"), spec.get("agents")):
            if isinstance(glob, str) and AGENT_GLOB.fullmatch(glob):
                globs.append(glob)
            else:
                ck.fail(p, f"must be an agent name or glob matching {AGENT_GLOB.pattern}")
        proxy = [
            read_proxy_grant(ck, p, g, dict(services))
            for p, g in ck.items(join(path, "proxy"), spec.get("proxy", []))
        ]
        groups[name] = Group(
            name,
            tuple(globs),
            read_grants(ck, join(path, "capabilities"), spec.get("capabilities"), caps),
            read_deny(ck, join(path, "deny"), spec.get("deny"), caps, services),
            tuple(g for g in proxy if g is not None),
            *read_derive_settings(ck, path, spec),
            *read_bind_settings(ck, path, spec),
        )
    return groups


def groups_of(agent: str, groups: Mapping[str, Group]) -> tuple[Group, ...]:
    """The groups whose agent globs match the agent name `agent`."""
    return tuple(g for g in groups.values() if any(fnmatchcase(agent, p) for p in g.agents))


def read_audit(ck: Checker, value: Any) -> str | None:
    """`audit: {params_key: CREDENTIAL}`: the key for the audit trail's parameter hashes."""
    if value is None:
        return None
    spec = ck.mapping("audit", value, set(), {"params_key", "chain_key"})
    if spec is None or "params_key" not in spec:
        return None
    return ck.string(join("audit", "params_key"), spec["params_key"], base.CREDENTIAL_NAME)
