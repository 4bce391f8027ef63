"""Turret's listings as MCP tools, and Turret's answers as MCP tool results. No I/O.

A Turret refusal is a tool result with `isError` and Turret's error code and message, never a
protocol error: the model reads why and the session goes on. Nothing here adds to what Turret
said; Turret's answers are already free of credentials.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import mcp_types as types

from turret.mcp.client import Answer
from turret.mcp.names import tool_names

HTTP_TOOL = "turret_http"
EXPLAIN_TOOL = "turret_explain"
_TEXTUAL = ("text/", "application/json", "application/xml", "application/x-www-form-urlencoded")
# What a tool's description adds when Turret holds its calls for a person.
_APPROVAL = {
    "required": " Each call waits for a person's approval; this tool returns once it is decided.",
    "conditional": " Some calls wait for a person's approval; this tool returns once decided.",
}
_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


@dataclass(frozen=True)
class Features:
    """Which of the bridge's own tools are on, and how much proxy body a result carries."""

    http: bool = True
    explain: bool = True
    http_max_body: int = 64 * 1024
    approval_wait: float = 900.0  # seconds a call held for approval is waited for


class BadArguments(ValueError):
    """Arguments to one of the bridge's own tools that do not fit its schema."""


def build_tools(
    capabilities: list[Mapping[str, Any]], whoami: Mapping[str, Any], features: Features
) -> list[types.Tool]:
    """The tools of one agent: its capabilities, then `turret_http` if it has proxy grants
    and `turret_explain` if it has anything to explain. `NameClash` if names collide."""
    names = tool_names(str(c["name"]) for c in capabilities)
    by_capability = {cap: tool for tool, cap in names.items()}
    tools = [
        types.Tool(
            name=by_capability[str(c["name"])],
            title=str(c["name"]),
            description=str(c.get("description") or c["name"]) + _APPROVAL.get(
                str(c.get("approval")), ""
            ),
            input_schema=dict(c.get("parameters") or {"type": "object"}),
        )
        for c in capabilities
    ]
    grants = list((whoami.get("grants") or {}).get("proxy") or [])
    if features.http and grants:
        tools.append(_http_tool(grants))
    if features.explain and (grants or capabilities):
        tools.append(_explain_tool())
    return tools


def listing_key(tools: list[types.Tool]) -> str:
    """A stable rendering of a tool list, to tell whether it changed."""
    return json.dumps([t.model_dump(mode="json") for t in tools], sort_keys=True)


def _http_tool(grants: list[Mapping[str, Any]]) -> types.Tool:
    services = sorted({str(g["service"]) for g in grants})
    methods = sorted({str(m) for g in grants for m in g.get("methods", [])})
    allowed = "; ".join(
        f"{g['service']}: {', '.join(g.get('methods', []))} {' '.join(g.get('paths', []))}"
        for g in grants
    )
    return types.Tool(
        name=HTTP_TOOL,
        title="HTTP through Turret",
        description=(
            "Send one HTTP request to a service through Turret's guarded proxy; Turret adds the "
            f"credential and checks the request against your grants ({allowed}). Returns the "
            "status, content type and body (cut at a size limit)."
        ),
        input_schema={
            "type": "object",
            "properties": {
                "method": {"type": "string", "enum": methods},
                "service": {"type": "string", "enum": services},
                "path": {"type": "string", "description": "path on the service, from '/'"},
                "query": {"type": "object", "additionalProperties": {"type": "string"}},
                "body": {"description": "a JSON body to send"},
            },
            "required": ["method", "service", "path"],
            "additionalProperties": False,
        },
    )


def _explain_tool() -> types.Tool:
    return types.Tool(
        name=EXPLAIN_TOOL,
        title="Would Turret allow this?",
        description=(
            "Ask Turret whether a call would be allowed, and why, without making it. Give "
            "`capability` (a tool name of this server or a capability name) with `params`, or "
            "`service`, `method` and `path` for a proxy request."
        ),
        input_schema={
            "type": "object",
            "properties": {
                "capability": {"type": "string"},
                "params": {"type": "object"},
                "service": {"type": "string"},
                "method": {"type": "string", "enum": list(_METHODS)},
                "path": {"type": "string"},
            },
            "additionalProperties": False,
        },
    )


# --- answers to results ------------------------------------------------------------------------


def capability_result(answer: Answer) -> types.CallToolResult:
    """`POST /v1/capabilities/{name}`'s answer: the result, or Turret's refusal."""
    payload = answer.json()
    if answer.status != 200 or not isinstance(payload, dict) or payload.get("ok") is not True:
        return refusal(answer)
    result = payload.get("result")
    return types.CallToolResult(
        content=[types.TextContent(type="text", text=json.dumps(result, indent=2))],
        structured_content=result if isinstance(result, dict) else {"result": result},
    )


def explain_result(answer: Answer) -> types.CallToolResult:
    """`POST /v1/explain`'s answer: the decision and its reason, or Turret's refusal."""
    payload = answer.json()
    decision = payload.get("decision") if isinstance(payload, dict) else None
    if answer.status != 200 or not isinstance(decision, dict):
        return refusal(answer)
    verdict = "allowed" if decision.get("allowed") else "denied"
    return types.CallToolResult(
        content=[types.TextContent(type="text", text=f"{verdict}: {decision.get('reason')}")],
        structured_content=decision,
    )


def http_result(answer: Answer) -> types.CallToolResult:
    """A proxied answer: Turret's own refusal is an error; the service's answer, whatever its
    status, is the result."""
    if _turret_error(answer) is not None:
        return refusal(answer)
    out: dict[str, Any] = {
        "status": answer.status,
        "content_type": answer.content_type,
        "truncated": answer.truncated,
    }
    if answer.content_type.startswith(_TEXTUAL):
        out["body"] = answer.body.decode("utf-8", "replace")
        shown = out["body"]
    else:
        out["body_base64"] = base64.b64encode(answer.body).decode()
        shown = f"({len(answer.body)} bytes of {answer.content_type or 'unknown type'})"
    cut = " (cut at the size limit)" if answer.truncated else ""
    head = f"HTTP {answer.status} {answer.content_type}{cut}"
    return types.CallToolResult(
        content=[types.TextContent(type="text", text=f"{head}\n\n{shown}")],
        structured_content=out,
    )


def refusal(answer: Answer) -> types.CallToolResult:
    """Turret's error answer as an error result: code and message, as Turret gave them."""
    error = _turret_error(answer) or {"code": "unexpected_answer", "request_id": None}
    return error_result(refusal_text(answer), {"status": answer.status, **error})


def refusal_text(answer: Answer) -> str:
    """One line for an error answer: Turret's status, code, message and request id."""
    error = _turret_error(answer)
    if error is None:
        return f"Turret answered HTTP {answer.status} without its error shape"
    text = f"Turret refused (HTTP {answer.status}, {error['code']}): {error['message']}"
    if error.get("request_id"):
        text += f" [request {error['request_id']}]"
    return text


def unreachable() -> types.CallToolResult:
    """The error result when Turret cannot be reached at all."""
    return error_result("Turret is not reachable", {"code": "turret_unreachable"})


def error_result(text: str, error: dict[str, Any]) -> types.CallToolResult:
    """An `isError` result with `text` and the error as structured content."""
    return types.CallToolResult(
        content=[types.TextContent(type="text", text=text)],
        structured_content={"error": error},
        is_error=True,
    )


def _turret_error(answer: Answer) -> dict[str, Any] | None:
    """`{"code", "message", "request_id"}` if the answer is Turret's JSON error shape."""
    payload = answer.json() if answer.content_type == "application/json" else None
    if not isinstance(payload, dict) or payload.get("ok") is not False:
        return None
    error = payload.get("error")
    if not isinstance(error, dict) or not {"code", "message"} <= error.keys():
        return None
    return {k: error.get(k) for k in ("code", "message", "request_id")}


# --- the bridge's own tools' arguments ---------------------------------------------------------


@dataclass(frozen=True)
class ProxyCall:
    """A `turret_http` call, checked for shape (Turret checks everything else)."""

    method: str
    service: str
    path: str
    query: dict[str, str]
    body: Any


def proxy_call(arguments: Mapping[str, Any]) -> ProxyCall:
    """Check `turret_http`'s arguments; `BadArguments` says what is wrong."""
    extra = sorted(arguments.keys() - {"method", "service", "path", "query", "body"})
    if extra:
        raise BadArguments(f"unknown argument {extra[0]!r}")
    method, service, path = (arguments.get(k) for k in ("method", "service", "path"))
    query = arguments.get("query") or {}
    if method not in _METHODS:
        raise BadArguments(f"method must be one of {', '.join(_METHODS)}")
    if not isinstance(service, str) or not service or "/" in service:
        raise BadArguments("service must be a service name")
    if not isinstance(path, str) or not path.startswith("/"):
        raise BadArguments("path must start with '/'")
    if not isinstance(query, dict) or not all(isinstance(v, str) for v in query.values()):
        raise BadArguments("query must be an object of strings")
    return ProxyCall(str(method), service, path, dict(query), arguments.get("body"))


def explain_body(
    arguments: Mapping[str, Any], capability_of: Callable[[str], str | None]
) -> dict[str, Any]:
    """`POST /v1/explain`'s body from `turret_explain`'s arguments; a tool name given as the
    capability is mapped back with `capability_of`."""
    body = {k: v for k, v in arguments.items() if v is not None}
    capability = body.get("capability")
    if isinstance(capability, str) and "." not in capability:
        body["capability"] = capability_of(capability) or capability
    return body
