"""Capability names to MCP tool names and back: `service.action` is `service__action`.

Tool names follow the strictest rule the common clients apply (`[A-Za-z0-9_-]{1,64}`, the
OpenAI/Anthropic function-name rule; SEP-986 allows dots and 128 characters, not every client
does). The mapping is a bijection on the names it accepts: a capability name that has `__`, or
a dot-separated part that starts or ends with `_`, would map ambiguously, so it is refused
rather than guessed at.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

TOOL_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
RESERVED = frozenset({"turret_http", "turret_explain"})  # the bridge's own tools
_SEPARATOR = "__"


class NameClash(ValueError):
    """Capability names that cannot all be offered as distinct tools."""


def tool_name(capability: str) -> str:
    """The tool name of `capability`; `NameClash` if it has none that maps back uniquely."""
    parts = capability.split(".")
    ambiguous = _SEPARATOR in capability or any(
        not p or p.startswith("_") or p.endswith("_") for p in parts
    )
    name = _SEPARATOR.join(parts)
    if ambiguous or not TOOL_NAME.fullmatch(name):
        raise NameClash(
            f"capability {capability!r} has no unambiguous MCP tool name "
            "(tool names are [A-Za-z0-9_-], at most 64 characters; '.' becomes '__')"
        )
    return name


def capability_name(tool: str) -> str | None:
    """The capability a tool name stands for, or None if `tool` is not a valid tool name."""
    if not TOOL_NAME.fullmatch(tool):
        return None
    return tool.replace(_SEPARATOR, ".")


def tool_names(capabilities: Iterable[str]) -> dict[str, str]:
    """Tool name -> capability name for a whole listing; `NameClash` names every problem."""
    out: dict[str, str] = {}
    problems: list[str] = []
    for capability in capabilities:
        try:
            name = tool_name(capability)
        except NameClash as exc:
            problems.append(str(exc))
            continue
        if name in RESERVED:
            problems.append(f"capability {capability!r} would shadow the bridge's tool {name!r}")
        elif name in out:
            problems.append(f"capabilities {out[name]!r} and {capability!r} are both {name!r}")
        else:
            out[name] = capability
    if problems:
        raise NameClash("; ".join(problems))
    return out
