"""Strict YAML reading: plain data only, every value located by its line.

The configuration is a public interface that may be written by hand or rendered by Nix, so the
reader refuses what YAML allows but a config never needs: tags (`!!python/...`, `!!binary`,
`!custom`), anchors and aliases (which also defeat "billion laughs" expansion), duplicate keys
and non-string keys. It does no I/O: it reads a string.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

from turret.errors import ConfigIssue, YamlError

# Data produced by `read_yaml`: str, int, float, bool, None, list and dict (str keys) only.
Data = Any


@dataclass
class Document:
    """Plain data read from YAML, with the line of every node keyed by its dotted path."""

    data: Data
    lines: dict[str, int] = field(default_factory=dict)

    def line_of(self, path: str) -> int | None:
        """The line of `path`, or of its nearest located parent."""
        while True:
            if path in self.lines:
                return self.lines[path]
            if not path:
                return None
            path = path.rpartition(".")[0]


def join(path: str, key: str | int) -> str:
    """Extend a dotted key path; list positions are written as `[N]`."""
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


MAX_DEPTH = 32  # a config is a few levels deep; deeper nesting only serves to exhaust the stack


class _StrictLoader(yaml.SafeLoader):
    """A SafeLoader that remembers which nodes carried a tag, an anchor or an alias, and refuses
    nesting deeper than `MAX_DEPTH` (composing recurses once per level)."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.flagged: dict[int, str] = {}
        self.depth = 0

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        event = self.peek_event()  # type: ignore[no-untyped-call]
        if self.depth >= MAX_DEPTH:
            raise yaml.composer.ComposerError(
                None, None, f"nested deeper than {MAX_DEPTH} levels", event.start_mark
            )
        self.depth += 1
        try:
            return self._compose_flagged(parent, index, event)
        finally:
            self.depth -= 1

    def _compose_flagged(
        self, parent: yaml.Node | None, index: int, event: Any
    ) -> yaml.Node | None:
        if isinstance(event, yaml.AliasEvent) or event.anchor is not None:
            problem = "YAML anchors and aliases are not allowed"
        elif getattr(event, "tag", None) is not None:
            problem = "YAML tags are not allowed"
        else:
            problem = None
        node = super().compose_node(parent, index)
        if problem:
            self.flagged[id(node)] = problem
        return node


def read_yaml(text: str) -> Document:
    """Parse `text` strictly; raise `YamlError` naming every problem, its path and line."""
    try:
        # The reader checks the characters as it is built: control characters raise here.
        loader = _StrictLoader(text)
    except yaml.YAMLError as exc:
        raise YamlError([ConfigIssue("", None, f"not valid YAML: {exc}")]) from None
    try:
        node = loader.get_single_node()
    except yaml.MarkedYAMLError as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark else None
        raise YamlError([ConfigIssue("", line, f"not valid YAML: {exc.problem}")]) from None
    except yaml.YAMLError as exc:
        raise YamlError([ConfigIssue("", None, f"not valid YAML: {exc}")]) from None
    finally:
        loader.dispose()
    doc = Document(data=None)
    if node is None:
        return doc
    issues: list[ConfigIssue] = []
    try:
        doc.data = _convert(node, "", doc, issues, loader)
    except yaml.MarkedYAMLError as exc:  # a scalar no safe constructor accepts, such as "="
        line = exc.problem_mark.line + 1 if exc.problem_mark else None
        raise YamlError([ConfigIssue("", line, f"not valid YAML: {exc.problem}")]) from None
    if issues:
        raise YamlError(issues)
    return doc




def _convert(
    node: yaml.Node, path: str, doc: Document, issues: list[ConfigIssue], loader: _StrictLoader
) -> Data:
    doc.lines[path] = node.start_mark.line + 1
    problem = loader.flagged.get(id(node))
    if problem:
        # Not descended into: an alias is never expanded, a tag never constructed.
        issues.append(ConfigIssue(path, node.start_mark.line + 1, problem))
        return None
    if isinstance(node, yaml.MappingNode):
        out: dict[str, Data] = {}
        for key_node, value_node in node.value:
            line = key_node.start_mark.line + 1
            key = _scalar(key_node, loader)
            if not isinstance(key, str):
                issues.append(ConfigIssue(path, line, f"key {key!r} must be a string"))
                continue
            child = join(path, key)
            if key in out:
                issues.append(ConfigIssue(child, line, "duplicate key"))
                continue
            out[key] = _convert(value_node, child, doc, issues, loader)
            doc.lines[child] = line
        return out
    if isinstance(node, yaml.SequenceNode):
        return [
            _convert(item, join(path, i), doc, issues, loader) for i, item in enumerate(node.value)
        ]
    return _scalar(node, loader)


def _scalar(node: yaml.Node, loader: _StrictLoader) -> Data:
    if not isinstance(node, yaml.ScalarNode):
        return node  # a collection used as a key; reported by the caller as not a string
    return loader.construct_object(node, deep=True)
