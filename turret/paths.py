"""Path canonicalisation and path globs: the ground the proxy policy stands on.

`canonical_path` turns the raw path an agent sent into one canonical form, or refuses it. The
policy checks that form and the proxy sends exactly that form upstream, so what was checked is
what is requested. Anything an upstream might read differently from us is refused rather than
guessed at: dot segments in any encoding, empty segments, encoded separators, control characters.
"""

from __future__ import annotations

import itertools
import re
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cached_property
from typing import Generic, TypeVar
from urllib.parse import quote, unquote_to_bytes

from turret.errors import BadRequest

# RFC 3986 pchar, minus "%" (handled as escapes): what may appear unencoded in a segment.
_RAW_SEGMENT = re.compile(r"[A-Za-z0-9\-._~!$&'()*+,;=:@%]*")
_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
# Characters kept unencoded in the canonical form; everything else is %XX in upper case. ";" is
# always encoded (some servers cut "path parameters" at it: "/..;/admin") and so is "+" (some
# read it as a space), so the canonical form means the same to every upstream.
_SAFE = "-._~!$&'()*,=:@"
_MAX_DECODE_DEPTH = 8
T = TypeVar("T")


@dataclass(frozen=True)
class CanonicalPath:
    """A checked path: `segments` are decoded text, `encoded` is what goes upstream."""

    segments: tuple[str, ...]

    @cached_property
    def encoded(self) -> str:
        return "/" + "/".join(quote(s, safe=_SAFE) for s in self.segments)

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
    return text


def _check_level(value: bytes) -> None:
    """Refuse one decoding level of a segment, also as a Unicode-normalising upstream reads it:
    NFKC turns FULLWIDTH FULL STOP into "." and FULLWIDTH SOLIDUS into "/"."""
    _check_decoded(value)
    if not value.isascii():
        text = value.decode("utf-8", "replace")
        _check_decoded(unicodedata.normalize("NFKC", text).encode("utf-8"))


def _check_decoded(value: bytes) -> None:
    if value.split(b";", 1)[0] in (b".", b".."):
        raise BadRequest("dot segments ('.', '..') are not allowed in a path")
    if b"/" in value or b"\\" in value:
        raise BadRequest("encoded '/' or '\\' is not allowed in a path segment")
    if any(b < 0x20 or b == 0x7F for b in value):
        raise BadRequest("control characters are not allowed in a path")


# --- globs -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PathGlob:
    """A path pattern: `*` matches within one segment, `**` matches any number of segments."""

    pattern: str
    parts: tuple[re.Pattern[str] | None, ...]  # None stands for `**`
    prefix: tuple[str, ...] = ()  # the leading segments without a wildcard

    def matches(self, path: CanonicalPath) -> bool:
        """True if `path` (decoded segments) is matched by this glob."""
        return _match(self.parts, 0, path.segments, 0)


class GlobIndex(Generic[T]):
    """Globs, each with a value, that can be matched against a path without trying them all.

    Each glob is filed under its leading literal segments; a path can only be matched by the
    globs filed under one of its own prefixes, so a lookup costs one dictionary probe per path
    segment plus the few candidates found, however many globs there are.
    """

    def __init__(self, entries: Iterable[tuple[PathGlob, T]]) -> None:
        self._by_prefix: dict[tuple[str, ...], list[tuple[int, PathGlob, T]]] = {}
        for order, (glob, value) in enumerate(entries):
            self._by_prefix.setdefault(glob.prefix, []).append((order, glob, value))

    def matching(self, path: CanonicalPath) -> Iterator[tuple[PathGlob, T]]:
        """The entries whose glob matches `path`, in the order they were given."""
        segs = path.segments
        candidates: list[tuple[int, PathGlob, T]] = []
        for k in range(len(segs) + 1):
            candidates.extend(self._by_prefix.get(segs[:k], ()))
        candidates.sort(key=lambda c: c[0])
        for _, glob, value in candidates:
            if glob.matches(path):
                yield glob, value


def compile_glob(pattern: str) -> PathGlob:
    """Compile a glob such as `/api/v1/repos/me/*/issues/**`; raise ValueError if malformed."""
    if not pattern.startswith("/"):
        raise ValueError("must start with '/'")
    if pattern == "/":
        return PathGlob(pattern, ())
    parts: list[re.Pattern[str] | None] = []
    segments = pattern[1:].split("/")
    for seg in segments:
        if seg == "":
            raise ValueError("empty segment")
        if seg == "**":
            parts.append(None)
        elif "**" in seg:
            raise ValueError("'**' must be a whole segment")
        elif seg in (".", ".."):
            raise ValueError("dot segments are not allowed")
        else:
            regex = ".*".join(re.escape(piece) for piece in seg.split("*"))
            parts.append(re.compile(regex, re.DOTALL))
    literal = tuple(itertools.takewhile(lambda seg: "*" not in seg, segments))
    return PathGlob(pattern, tuple(parts), literal)


def _match(
    parts: tuple[re.Pattern[str] | None, ...], i: int, segs: tuple[str, ...], j: int
) -> bool:
    while i < len(parts):
        part = parts[i]
        if part is None:
            # `**`: try every split; patterns are short so this stays cheap.
            return any(_match(parts, i + 1, segs, k) for k in range(j, len(segs) + 1))
        if j >= len(segs) or not part.fullmatch(segs[j]):
            return False
        i, j = i + 1, j + 1
    return j == len(segs)
