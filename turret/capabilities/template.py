"""Request templates: checked when the config loads, filled in with validated parameters per call.

A `{param}` in the path fills one path segment and is percent-encoded as one (a "/" in the value
is encoded too) unless the parameter declares `segments: N`; the filled path is then checked like
any path an agent sends to the proxy, so a parameter can never add "..", a separator or a control
character. Query, header and form values are encoded by Turret; JSON bodies keep the parameter's
JSON type.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Iterator, Mapping
from urllib.parse import quote, quote_plus

from multidict import CIMultiDict

from turret.errors import BadRequest, UnprocessableEntity
from turret.model import (
    FIELD_NAME,
    JSON,
    TXN_PLACEHOLDER,
    Capability,
    Outbound,
    Param,
    Params,
    ParamValue,
)
from turret.paths import CanonicalPath, canonical_path

PLACEHOLDER = re.compile(r"\{(\$?[a-z][a-z0-9_]*)\}")
_LITERAL_SEGMENT = re.compile(r"[A-Za-z0-9._~!$&'()*,=:@-]*")
# Headers a template may not set: credentials, routing and framing are Turret's alone.
FORBIDDEN_HEADERS = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "cookie",
        "cookie2",
        "host",
        "content-length",
        "content-type",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "te",
        "trailer",
        "upgrade",
        "expect",
        "forwarded",
        "x-real-ip",
    }
)
BODY_KINDS = ("json", "form", "multipart")
# Where a value may land; in every place but a JSON body, CR, LF and NUL are refused.
TEXT_PLACES = frozenset({"path", "query", "header", "form"})



def text_of(value: ParamValue) -> str:
    """A parameter as text: JSON's spelling for booleans and numbers."""
    if isinstance(value, str):
        return value
    return json.dumps(value)


def _strings(body: JSON, where: str) -> Iterator[tuple[str, str]]:
    if isinstance(body, str):
        yield where, body
    elif isinstance(body, dict):
        for key, value in body.items():
            yield from _strings(value, f"{where}.{key}")
    elif isinstance(body, list):
        for i, value in enumerate(body):
            yield from _strings(value, f"{where}[{i}]")


def _texts(capability: Capability) -> Iterator[tuple[str, str, str]]:
    """(place, key path, template text) for every text of the request template."""
    req = capability.request
    yield "path", "request.path", req.path
    for name, value in req.query:
        yield "query", f"request.query.{name}", value
    for name, value in req.headers:
        yield "header", f"request.headers.{name}", value
    place = "json" if req.body_kind == "json" else "form"
    for where, value in _strings(req.body, f"request.{req.body_kind}"):
        yield place, where, value


def placements(capability: Capability) -> dict[str, frozenset[str]]:
    """Where each parameter lands: "path", "query", "header", "form" or "json"."""
    found: dict[str, set[str]] = {p.name: set() for p in capability.params}
    for place, _, text in _texts(capability):
        for m in PLACEHOLDER.finditer(text):
            found.setdefault(m[1], set()).add(place)
    return {name: frozenset(places) for name, places in found.items()}


def template_problems(capability: Capability) -> list[tuple[str, str]]:
    """(key path, message) for everything wrong with the request template; [] if none."""
    params = {p.name: p for p in capability.params}
    problems: list[tuple[str, str]] = []
    for place, where, text in _texts(capability):
        for m in PLACEHOLDER.finditer(text):
            name = m[1]
            param = params.get(name)
            if name == TXN_PLACEHOLDER:
                continue
            if param is None:
                problems.append((where, f"{{{name}}} names no parameter"))
            elif place == "path" and not _always_set(param):
                problems.append((where, f"{{{name}}} in the path must be a required parameter"))
            elif text != m[0] and not _always_set(param):
                problems.append((where, f"optional {{{name}}} must be the whole value"))
    problems += _path_problems(capability.request.path, params)
    problems += _name_problems(capability)
    for name, places in placements(capability).items():
        if name in params and not places:
            problems.append((f"params.{name}", "is not used by the request"))
    return problems


def _always_set(param: Param) -> bool:
    return param.required or param.default is not None


def _path_problems(path: str, params: Mapping[str, Param]) -> list[tuple[str, str]]:
    where = "request.path"
    if not path.startswith("/") or "?" in path or "#" in path:
        return [(where, "must start with '/' and have no query or fragment (use query:)")]
    if path == "/":
        return []
    problems = []
    for segment in path[1:].split("/"):
        literal = PLACEHOLDER.sub("", segment)
        whole = PLACEHOLDER.fullmatch(segment)
        if segment in ("", ".", "..") or not _LITERAL_SEGMENT.fullmatch(literal):
            problems.append(
                (where, f"segment {segment!r} is empty, a dot segment or not canonical")
            )
        for m in PLACEHOLDER.finditer(segment):
            param = params.get(m[1])
            if param is not None and param.segments > 1 and not whole:
                problems.append((where, f"{{{m[1]}}} spans segments: it must be a whole segment"))
    return problems


def _name_problems(capability: Capability) -> list[tuple[str, str]]:
    req = capability.request
    problems = []
    for name, _ in req.headers:
        if name.lower() in FORBIDDEN_HEADERS or name.lower().startswith(("proxy-", "x-forwarded-")):
            problems.append((f"request.headers.{name}", "this header is Turret's to set"))
    if req.body_kind in ("form", "multipart"):
        fields = req.body if isinstance(req.body, dict) else {}
        for name, value in fields.items():
            if not FIELD_NAME.fullmatch(name) or not isinstance(value, str):
                problems.append((f"request.{req.body_kind}.{name}", "must be NAME: text"))
    return problems


# --- filling in ----------------------------------------------------------------------------------


def build_request(capability: Capability, params: Params) -> Outbound:
    """The request for validated `params`; raise `UnprocessableEntity` naming a bad parameter."""
    values: dict[str, ParamValue] = {**params, TXN_PLACEHOLDER: secrets.token_hex(16)}
    req = capability.request
    path = _fill_path(req.path, values, capability)
    query = "&".join(
        f"{quote(name, safe='')}={quote(text, safe='')}"
        for name, template in req.query
        if (text := _fill_text(template, values)) is not None
    )
    headers = {"Accept": "application/json"}
    for name, template in req.headers:
        text = _fill_text(template, values)
        if text is not None:
            headers[name] = text
    body = b""
    if req.body_kind == "json":
        headers["Content-Type"] = "application/json"
        filled = _fill_json(req.body, values)
        body = json.dumps(filled, ensure_ascii=False, separators=(",", ":")).encode()
    elif req.body_kind in ("form", "multipart"):
        fields = [
            (name, text)
            for name, template in (req.body if isinstance(req.body, dict) else {}).items()
            if isinstance(template, str) and (text := _fill_text(template, values)) is not None
        ]
        content_type, body = _encode_form(req.body_kind, fields)
        headers["Content-Type"] = content_type
    return Outbound(req.method, path, query, CIMultiDict(headers), body)


def _fill_text(template: str, values: Mapping[str, ParamValue]) -> str | None:
    """The text with every placeholder filled; None if it is one absent optional parameter."""
    whole = PLACEHOLDER.fullmatch(template)
    if whole and whole[1] not in values:
        return None
    return PLACEHOLDER.sub(lambda m: text_of(values[m[1]]), template)


def _fill_json(body: JSON, values: Mapping[str, ParamValue]) -> JSON:
    if isinstance(body, str):
        whole = PLACEHOLDER.fullmatch(body)
        if whole:
            return values.get(whole[1])
        return PLACEHOLDER.sub(lambda m: text_of(values[m[1]]), body)
    if isinstance(body, dict):
        out: dict[str, JSON] = {}
        for key, value in body.items():
            filled = _fill_json(value, values)
            whole = PLACEHOLDER.fullmatch(value) if isinstance(value, str) else None
            if not (whole and whole[1] not in values):
                out[key] = filled
        return out
    if isinstance(body, list):
        return [_fill_json(v, values) for v in body]
    return body


def _fill_path(
    template: str, values: Mapping[str, ParamValue], capability: Capability
) -> CanonicalPath:
    if template == "/":
        return CanonicalPath(())
    segments: list[str] = []
    for segment in template[1:].split("/"):
        if "{" not in segment:
            segments.append(segment)  # a fixed part: `_path_problems` checked it at load
            continue
        whole = PLACEHOLDER.fullmatch(segment)
        param = capability.param(whole[1]) if whole else None
        if param is not None and param.segments > 1:
            parts = text_of(values[param.name]).split("/")
            segments += [_checked_segment(p, param.name) for p in parts]
            continue
        names = [m[1] for m in PLACEHOLDER.finditer(segment)]
        text = PLACEHOLDER.sub(lambda m: text_of(values[m[1]]), segment)
        segments.append(_checked_segment(text, names[0] if names else None))
    return CanonicalPath(tuple(segments))


def _checked_segment(text: str, param: str | None) -> str:
    """`text` as one path segment, refused exactly as the proxy refuses an ambiguous path."""
    try:
        canonical_path(CanonicalPath((text,)).encoded if text else "//")
    except BadRequest as exc:
        raise UnprocessableEntity(f"params.{param}: cannot be used in the path: {exc}") from None
    return text


def _encode_form(kind: str | None, fields: list[tuple[str, str]]) -> tuple[str, bytes]:
    if kind == "form":
        text = "&".join(f"{quote_plus(n)}={quote_plus(v)}" for n, v in fields)
        return "application/x-www-form-urlencoded", text.encode()
    boundary = secrets.token_hex(16)
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
        for name, value in fields
    ]
    return f"multipart/form-data; boundary={boundary}", "".join(
        [*parts, f"--{boundary}--\r\n"]
    ).encode()
