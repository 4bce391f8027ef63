"""The checker every configuration reader reports through: typed access plus located issues."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from turret.config.yamlload import Document, join
from turret.errors import ConfigIssue
from turret.netpolicy import service_url


class Checker:
    """Walks a document, collecting every issue rather than stopping at the first.

    Readers of each part of the configuration take a `Checker` and report through it, so all
    problems come out together, each with its dotted key path and line.
    """

    def __init__(self, doc: Document) -> None:
        self.doc = doc
        self.issues: list[ConfigIssue] = []

    def fail(self, path: str, message: str) -> None:
        """Record a problem at `path`."""
        self.issues.append(ConfigIssue(path, self.doc.line_of(path), message))

    def mapping(
        self, path: str, value: Any, required: set[str], optional: set[str]
    ) -> dict[str, Any] | None:
        """`value` if it is a mapping with every required key and no unknown key."""
        if not isinstance(value, dict):
            self.fail(path, "must be a mapping")
            return None
        for key in value.keys() - required - optional:
            self.fail(join(path, key), "unknown key")
        for key in sorted(required - value.keys()):
            self.fail(path, f"missing required key '{key}'")
        return value

    def url(self, path: str, value: Any) -> str | None:
        """An outbound `http(s)://` URL (a service's, a provider's), normalised; else reported."""
        text = self.string(path, value)
        if text is None:
            return None
        try:
            return service_url(text)
        except ValueError as exc:
            self.fail(path, str(exc))
            return None

    def string(
        self,
        path: str,
        value: Any,
        pattern: re.Pattern[str] | None = None,
        *,
        quote: bool = True,
    ) -> str | None:
        """`value` if it is a non-empty string matching `pattern`. With `quote=False` a refusal
        does not repeat the value (where a secret may be pasted by mistake: a raw token)."""
        if not isinstance(value, str) or not value:
            self.fail(path, "must be a non-empty string")
            return None
        if pattern is not None and not pattern.fullmatch(value):
            shown = f"{value!r} " if quote else ""
            self.fail(path, f"{shown}must match {pattern.pattern}")
            return None
        return value

    def number(self, path: str, value: Any, lo: float, hi: float, *, integer: bool) -> Any:
        """`value` if it is a number (an integer if `integer`; never a bool) in [lo, hi]."""
        kinds = (int,) if integer else (int, float)
        if isinstance(value, bool) or not isinstance(value, kinds) or not lo <= value <= hi:
            kind = "an integer" if integer else "a number"
            self.fail(path, f"must be {kind} from {lo:g} to {hi:g}")
            return None
        return value

    def items(self, path: str, value: Any) -> list[tuple[str, Any]]:
        """The (path, item) pairs of a list."""
        if not isinstance(value, list):
            self.fail(path, "must be a list")
            return []
        return [(join(path, i), v) for i, v in enumerate(value)]

    def named(self, path: str, value: Any, build: Callable[[str, str, Any], Any]) -> dict[str, Any]:
        """A mapping of names to what `build(path, name, body)` made of each (None: left out)."""
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.fail(path, "must be a mapping")
            return {}
        out = {}
        for name, body in value.items():
            built = build(join(path, name), name, body)
            if built is not None:
                out[name] = built
        return out
