"""Strict YAML reading: plain data only, every value located by its line.

The configuration is a public interface that may be written by hand or rendered by Nix, so the
reader refuses what YAML allows but a config never needs: tags (`!!python/...`, `!!binary`,
`!custom`), anchors and aliases (which also defeat "billion laughs" expansion), duplicate keys
and non-string keys. It does no I/O: it reads a string.

libyaml (PyYAML's C parser) turns the text into events; one walk over the events checks them and
builds the data and the line table directly, with no node tree in between, so a 10,000-agent
config reads in about the time `yaml.load(..., Loader=yaml.CSafeLoader)` takes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml
from yaml.composer import ComposerError
from yaml.events import (
    AliasEvent,
    MappingEndEvent,
    MappingStartEvent,
    ScalarEvent,
    SequenceEndEvent,
    StreamEndEvent,
)
from yaml.nodes import ScalarNode

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
_TAGGED = "YAML tags are not allowed"
_ANCHORED = "YAML anchors and aliases are not allowed"
_STR = "tag:yaml.org,2002:str"
_REFUSED = object()  # what a tagged, anchored or aliased node reads as: reported, never built


def read_yaml(text: str) -> Document:
    """Parse `text` strictly; raise `YamlError` naming every problem, its path and line."""
    try:
        data = text.encode("utf-8")
    except UnicodeEncodeError as exc:  # a lone surrogate: no file holds one
        problem = f"not valid YAML: {exc.reason} (character {exc.start})"
        raise YamlError([ConfigIssue("", None, problem)]) from None
    loader = yaml.CSafeLoader(data)
    doc = Document(data=None)
    walker = _Walker(loader, doc.lines)
    try:
        doc.data = walker.document()
    except yaml.MarkedYAMLError as exc:  # syntax, nesting, or a scalar no constructor accepts
        line = exc.problem_mark.line + 1 if exc.problem_mark else None
        raise YamlError([ConfigIssue("", line, f"not valid YAML: {exc.problem}")]) from None
    except yaml.YAMLError as exc:  # the reader's: a control character
        raise YamlError([ConfigIssue("", None, f"not valid YAML: {exc}")]) from None
    finally:
        loader.dispose()
    if walker.issues:
        raise YamlError(walker.issues)
    return doc


class _Walker:
    """One pass over libyaml's events: check each node and build plain data and line numbers."""

    def __init__(self, loader: yaml.CSafeLoader, lines: dict[str, int]) -> None:
        self.loader: Any = loader  # PyYAML's stubs leave most of its event API untyped
        self.lines = lines
        self.issues: list[ConfigIssue] = []
        self.anchors: dict[str, Any] = {}  # anchor -> mark, for PyYAML's own composer errors
        self.discarding = False

    def document(self) -> Data:
        """The single document of the stream (None for an empty stream)."""
        loader = self.loader
        loader.get_event()  # the stream's start
        if loader.check_event(StreamEndEvent):
            return None
        start = loader.get_event()  # document start
        first = loader.peek_event()
        self.lines[""] = first.start_mark.line + 1
        value = self.node(loader.get_event(), "", 0)
        loader.get_event()  # document end
        if not loader.check_event(StreamEndEvent):
            event = loader.get_event()
            raise ComposerError(
                "expected a single document in the stream",
                start.start_mark,
                "but found another document",
                event.start_mark,
            )
        return None if value is _REFUSED else value

    def node(self, event: Any, path: str, depth: int) -> Data:
        """The data of the node `event` starts; `_REFUSED` (and an issue) if it is flagged."""
        if depth >= MAX_DEPTH:
            raise ComposerError(
                None, None, f"nested deeper than {MAX_DEPTH} levels", event.start_mark
            )
        problem = self.problem(event)
        if problem is None:
            return self.value(event, path, depth)
        if not isinstance(event, (ScalarEvent, AliasEvent)):
            self.discard(event, path, depth)
        self.issues.append(ConfigIssue(path, event.start_mark.line + 1, problem))
        return _REFUSED

    def problem(self, event: Any) -> str | None:
        """Why `event`'s node is refused, if it is; raise PyYAML's errors for broken anchors."""
        anchor, mark = event.anchor, event.start_mark
        if isinstance(event, AliasEvent):
            if anchor not in self.anchors:
                raise ComposerError(None, None, f"found undefined alias {anchor!r}", mark)
            return _ANCHORED
        if anchor is not None:
            if anchor in self.anchors:
                raise ComposerError(
                    f"found duplicate anchor {anchor!r}; first occurrence",
                    self.anchors[anchor],
                    "second occurrence",
                    mark,
                )
            self.anchors[anchor] = mark
            return _ANCHORED
        return _TAGGED if event.tag is not None else None

    def discard(self, event: Any, path: str, depth: int, *, checked: bool = True) -> None:
        """Read a refused node to its end, keeping none of what it holds (`checked`: the node's
        own tag and anchor are looked at already)."""
        kept = self.issues, self.lines, self.discarding
        self.issues, self.lines, self.discarding = [], {}, True
        try:
            (self.value if checked else self.node)(event, path, depth)
        finally:
            self.issues, self.lines, self.discarding = kept

    def value(self, event: Any, path: str, depth: int) -> Data:
        if isinstance(event, MappingStartEvent):
            return self.mapping(path, depth + 1)
        if isinstance(event, ScalarEvent):
            return None if self.discarding else self.scalar(event)
        return self.sequence(path, depth + 1)

    def scalar(self, event: Any) -> Data:
        loader = self.loader
        tag = loader.resolve(ScalarNode, event.value, event.implicit)
        if tag == _STR:
            return event.value
        node = ScalarNode(tag, event.value, event.start_mark, event.end_mark, event.style)
        return loader.construct_object(node, deep=True)

    def sequence(self, path: str, depth: int) -> list[Data]:
        loader, lines, out = self.loader, self.lines, list[Data]()
        while not loader.check_event(SequenceEndEvent):
            event = loader.get_event()
            child = f"{path}[{len(out)}]"
            lines[child] = event.start_mark.line + 1
            item = self.node(event, child, depth)
            out.append(None if item is _REFUSED else item)
        loader.get_event()
        return out

    def mapping(self, path: str, depth: int) -> dict[str, Data]:
        loader, out = self.loader, {}
        while not loader.check_event(MappingEndEvent):
            event = loader.get_event()
            line = event.start_mark.line + 1
            key = self.node(event, path, depth)
            value_event = loader.get_event()
            if isinstance(key, str) and key not in out:
                child = join(path, key)
                self.lines[child] = line
                value = self.node(value_event, child, depth)
                out[key] = None if value is _REFUSED else value
                continue
            # Not descended into, but read to its end: its own syntax and nesting still count.
            self.discard(value_event, path, depth, checked=False)
            if isinstance(key, str):
                self.issues.append(ConfigIssue(join(path, key), line, "duplicate key"))
            elif key is not _REFUSED:  # a refused key is reported already
                self.issues.append(ConfigIssue(path, line, f"key {key!r} must be a string"))
        loader.get_event()
        return out
