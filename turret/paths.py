"""Path canonicalisation and path globs: the ground the proxy policy stands on.

`canonical_path` turns the raw path an agent sent into one canonical form, or refuses it. The
policy checks that form and the proxy sends exactly that form upstream, so what was checked is
what is requested. Anything an upstream might read differently from us is refused rather than
guessed at: dot segments in any encoding (also `.. `, `...`, `..;x`, `..%3F`: what an upstream
that trims or cuts a segment reads as one), empty segments, encoded separators, control
characters.

Each segment also has a *folded* reading (`CanonicalPath.folded`): percent-decoded again, NFKC
normalised, case-folded, default-ignorable characters removed, repeated until nothing changes.
It is what an upstream that normalises everything would read, and then trims as the most
lenient do (`upstream_reading`: cut at `;`, `?`, `#`; trailing dots and blanks and `::$DATA`
dropped; a segment left empty merged away). Deny rules match it as well as the
canonical form (`PathGlob.covers`); grants match the canonical form only.

Globs match in linear time, without backtracking. A glob is a sequence of *runs* of
single-segment patterns separated by `**`. Within a segment, a pattern is literal pieces between
`*`s: the first piece must be a prefix, the last a suffix, and each middle piece is found leftmost
with `str.find` after the one before. Across segments, the first run must match at the start,
the last at the end, and each middle run is found at the leftmost place after the one before.
Leftmost is always right, because a `*` or `**` between pieces matches anything, so the earliest
placement leaves the most room for the rest. A glob with m segment patterns and p pieces costs at
most O(n * m) segment matches against a path of n segments, each O(length * p): linear in the
path for a given glob, and globs are bounded at load (`MAX_GLOB_CHARS`, `MAX_GLOB_WILDCARDS`).
"""

from __future__ import annotations

import itertools
import re
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cached_property
from typing import Generic, TypeVar
from urllib.parse import quote, unquote, unquote_to_bytes

from turret.errors import BadRequest
from turret.views import IGNORABLE

# RFC 3986 pchar, minus "%" (handled as escapes): what may appear unencoded in a segment.
_RAW_SEGMENT = re.compile(r"[A-Za-z0-9\-._~!$&'()*+,;=:@%]*")
_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
# Characters kept unencoded in the canonical form; everything else is %XX in upper case. ";" is
# always encoded (some servers cut "path parameters" at it: "/..;/admin") and so is "+" (some
# read it as a space), so the canonical form means the same to every upstream.
_SAFE = "-._~!$&'()*,=:@"
_MAX_DECODE_DEPTH = 8
# The two letters that a per-character case-insensitive comparison (Java's equalsIgnoreCase,
# .NET's invariant culture) equates with ASCII "i" but casefold() does not.
_SIMPLE_CASE = str.maketrans({"\u0130": "i", "\u0131": "i"})
# What ends a segment, or the path, to a lenient upstream: a path parameter (servlet
# containers cut `;jsessionid=...`), a `?` or `#` a decoding proxy re-parses as query or fragment.
_SEGMENT_END = re.compile(r"[;?#]")
# Windows (IIS, .NET) reads `name::$DATA` (a file's default NTFS stream) as `name`.
_STREAM = "::$data"
MAX_GLOB_CHARS = 1024
MAX_GLOB_WILDCARDS = 16
T = TypeVar("T")


@dataclass(frozen=True)
class CanonicalPath:
    """A checked path: `segments` are decoded text, `encoded` is what goes upstream."""

    segments: tuple[str, ...]

    @cached_property
    def encoded(self) -> str:
        return "/" + "/".join(quote(s, safe=_SAFE) for s in self.segments)

    @cached_property
    def folded(self) -> tuple[str, ...]:
        """The segments as an upstream that decodes, NFKC-normalises, case-folds and trims them
        reads them (`upstream_reading`), a segment read as empty merged away and the path ended
        at a decoded `?` or `#`; computed on first use (only deny rules need it)."""
        read: list[str] = []
        for segment in self.segments:
            folded = _folded_readings(segment)[-1]
            if reading := upstream_reading(folded):
                read.append(reading)
            if "?" in folded or "#" in folded:
                break
        return tuple(read)

    def __str__(self) -> str:
        return self.encoded


def canonical_path(raw: str) -> CanonicalPath:
    """Canonicalise a raw, still percent-encoded path such as `/api/v1/user`.

    Raises `BadRequest` for anything ambiguous. The root path `/` is canonical with no segments.
    """
    if not raw.startswith("/"):
        raise BadRequest("path must start with '/'")
    if raw == "/":
        return CanonicalPath(())
    return CanonicalPath(tuple(_segment(s) for s in raw[1:].split("/")))


def _segment(raw: str) -> str:
    if raw == "":
        raise BadRequest("empty path segment")
    if not _RAW_SEGMENT.fullmatch(raw):
        raise BadRequest("path contains a character that must be percent-encoded")
    if _ESCAPE.search(raw):
        raise BadRequest("malformed percent-escape in path")
    value = unquote_to_bytes(raw)
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest("path segment is not valid UTF-8") from None
    _check_level(value)
    # An upstream or a framework in front of it may decode again: what the next levels of
    # decoding would reveal must be as harmless as the first.
    deeper = value
    for _ in range(_MAX_DECODE_DEPTH):
        if b"%" not in deeper or _ESCAPE.search(deeper.decode("latin-1")):
            break
        deeper = unquote_to_bytes(deeper)
        _check_level(deeper)
    # ... and so must what normalising first reveals: NFKC turns FULLWIDTH PERCENT SIGN into
    # "%", so twice "%EF%BC%85" + "2e" reads "%2e%2e", then "..".
    if not (text.isascii() and "%" not in text):
        for reading in _folded_readings(text):
            _check_decoded(reading.encode("utf-8", "replace"))
    return text


def _check_level(value: bytes) -> None:
    """Refuse one decoding level of a segment, also as a Unicode-normalising upstream reads it:
    NFKC turns FULLWIDTH FULL STOP into "." and FULLWIDTH SOLIDUS into "/"."""
    _check_decoded(value)
    if not value.isascii():
        text = value.decode("utf-8", "replace")
        _check_decoded(unicodedata.normalize("NFKC", text).encode("utf-8"))


def upstream_reading(segment: str) -> str:
    """A segment as a lenient upstream reads it: cut at `;`, `?` or `#`, without leading
    blanks, an NTFS `::$DATA` suffix, or trailing dots and blanks."""
    head = _without_stream(_SEGMENT_END.split(segment, 1)[0].lstrip())
    end = len(head)
    while end and (head[end - 1] == "." or head[end - 1].isspace()):  # Windows drops them
        end -= 1
    return head[:end]


def _without_stream(text: str) -> str:
    return text[: -len(_STREAM)] if text[-len(_STREAM) :].lower() == _STREAM else text


def _is_dot_segment(value: bytes) -> bool:
    """`.` or `..` to some upstream: only dots once cut and trimmed (`.. `, `...`, `..;x`,
    `..?`, `..::$DATA`)."""
    head = _SEGMENT_END.split(value.decode("utf-8", "replace"), 1)[0].strip()
    head = _without_stream(head).strip()
    return head != "" and head.strip(".") == ""


def _check_decoded(value: bytes) -> None:
    if _is_dot_segment(value):
        raise BadRequest("dot segments ('.', '..') are not allowed in a path")
    if b"/" in value or b"\\" in value:
        raise BadRequest("encoded '/' or '\\' is not allowed in a path segment")
    if any(b < 0x20 or b == 0x7F for b in value):
        raise BadRequest("control characters are not allowed in a path")


def _fold(text: str) -> str:
    """NFKC, then case-folded, without default-ignorables, NFKC again (casefold and removing
    a joiner can each leave a sequence that composes)."""
    if text.isascii():
        return text.lower()
    text = unicodedata.normalize("NFKC", text).translate(_SIMPLE_CASE).casefold()
    return unicodedata.normalize("NFKC", IGNORABLE.sub("", text))


def _folded_readings(text: str) -> list[str]:
    """`text` folded, then percent-decoded and folded again, until decoding changes nothing:
    every reading of a normalising upstream, the most normalised last."""
    readings = []
    for _ in range(_MAX_DECODE_DEPTH):
        folded = _fold(text)
        readings.append(folded)
        text = unquote(folded, errors="replace") if "%" in folded else folded
        if text == folded:
            break
    return readings


# --- globs -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _SegmentGlob:
    """One segment of a glob: literal pieces with a `*` between each two; one piece is literal."""

    pieces: tuple[str, ...]

    def matches(self, text: str) -> bool:
        pieces = self.pieces
        if len(pieces) == 1:
            return text == pieces[0]
        first, last = pieces[0], pieces[-1]
        end = len(text) - len(last)
        if end < len(first) or not text.startswith(first) or not text.endswith(last):
            return False
        pos = len(first)
        for piece in pieces[1:-1]:
            found = text.find(piece, pos, end)
            if found < 0:
                return False
            pos = found + len(piece)
        return True

    def folded(self) -> _SegmentGlob:
        return _SegmentGlob(tuple(upstream_reading(_folded_readings(p)[-1]) for p in self.pieces))


_Run = tuple[_SegmentGlob, ...]


@dataclass(frozen=True)
class PathGlob:
    """A path pattern: `*` matches within one segment, `**` matches any number of segments."""

    pattern: str
    runs: tuple[_Run, ...]  # the segment patterns between `**`s; one run means no `**`
    prefix: tuple[str, ...] = ()  # the leading segments without a wildcard

    def matches(self, path: CanonicalPath) -> bool:
        """True if `path` (decoded segments) is matched by this glob."""
        return _match(self.runs, path.segments)

    def covers(self, path: CanonicalPath) -> bool:
        """True if this glob matches `path` or its folded reading, the glob folded alike: how a
        deny rule matches, so that no normalisation upstream reads its way around it."""
        return self.matches(path) or _match(self._folded_runs, path.folded)

    @cached_property
    def _folded_runs(self) -> tuple[_Run, ...]:
        return tuple(tuple(seg.folded() for seg in run) for run in self.runs)


class GlobIndex(Generic[T]):
    """Globs, each with a value, that can be matched against a path without trying them all.

    Each glob is filed under its leading literal segments; a path can only be matched by the
    globs filed under one of its own prefixes, so a lookup costs one dictionary probe per prefix
    length in use plus the few candidates found, however many globs there are.
    """

    def __init__(self, entries: Iterable[tuple[PathGlob, T]]) -> None:
        self._by_prefix: dict[tuple[str, ...], list[tuple[int, PathGlob, T]]] = {}
        for order, (glob, value) in enumerate(entries):
            self._by_prefix.setdefault(glob.prefix, []).append((order, glob, value))
        # Probing only prefix lengths that some glob has keeps a long path from costing
        # quadratic time in slicing and hashing its prefixes.
        self._lengths = sorted({len(prefix) for prefix in self._by_prefix})

    def matching(self, path: CanonicalPath) -> Iterator[tuple[PathGlob, T]]:
        """The entries whose glob matches `path`, in the order they were given."""
        segs = path.segments
        candidates: list[tuple[int, PathGlob, T]] = []
        for k in itertools.takewhile(lambda k: k <= len(segs), self._lengths):
            candidates.extend(self._by_prefix.get(segs[:k], ()))
        candidates.sort(key=lambda c: c[0])
        for _, glob, value in candidates:
            if glob.matches(path):
                yield glob, value


def compile_glob(pattern: str) -> PathGlob:
    """Compile a glob such as `/api/v1/repos/me/*/issues/**`; raise ValueError if malformed."""
    if not pattern.startswith("/"):
        raise ValueError("must start with '/'")
    if len(pattern) > MAX_GLOB_CHARS:
        raise ValueError(f"is longer than {MAX_GLOB_CHARS} characters")
    if pattern.count("*") > MAX_GLOB_WILDCARDS:
        raise ValueError(f"has more than {MAX_GLOB_WILDCARDS} '*'")
    if pattern == "/":
        return PathGlob(pattern, ((),))
    runs: list[_Run] = [()]
    segments = pattern[1:].split("/")
    for seg in segments:
        if seg == "":
            raise ValueError("empty segment")
        if seg == "**":
            runs.append(())
        elif "**" in seg:
            raise ValueError("'**' must be a whole segment")
        elif seg in (".", ".."):
            raise ValueError("dot segments are not allowed")
        else:
            runs[-1] += (_SegmentGlob(tuple(seg.split("*"))),)
    literal = tuple(itertools.takewhile(lambda seg: "*" not in seg, segments))
    return PathGlob(pattern, tuple(runs), literal)


def _match(runs: tuple[_Run, ...], segs: tuple[str, ...]) -> bool:
    """Leftmost placement of each run between the first (at the start) and last (at the end)."""
    first, last = runs[0], runs[-1]
    if len(runs) == 1:
        return len(segs) == len(first) and _run_at(first, segs, 0)
    stop = len(segs) - len(last)
    if stop < len(first) or not _run_at(first, segs, 0) or not _run_at(last, segs, stop):
        return False
    pos = len(first)
    for run in runs[1:-1]:
        found = next((at for at in range(pos, stop - len(run) + 1) if _run_at(run, segs, at)), -1)
        if found < 0:
            return False
        pos = found + len(run)
    return True


def _run_at(run: _Run, segs: tuple[str, ...], at: int) -> bool:
    return all(seg.matches(segs[at + k]) for k, seg in enumerate(run))
