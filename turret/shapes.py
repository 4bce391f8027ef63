"""Shapes: values the guards recognise by form (a prefix and an alphabet) rather than by value.

An agent token is `turret_` and 43 url-safe base64 characters: any such value is refused on
its way out whether or not it belongs to a configured agent. A shape is found in each view the
echo guard makes (`turret.views`), and also, because no fixed pattern can list them, here:

- with whitespace inside the value removed;
- in UTF-16/32 at any alignment (a pattern with the NUL bytes interleaved);
- in hex of any letter case (the prefix's hex followed by enough hex digit pairs);
- inside base64 runs (standard or URL-safe, wrapped at any line length), decoded at each of the
  four character offsets.

Every search is a regular expression with no nested repetition, so it runs in linear time.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator
from dataclasses import dataclass, field

# Base64 runs may be wrapped (MIME: CRLF every 76 characters, or at any other width); spaces end
# a run, so ordinary text does not join into one.
_B64_RUN_CHARS = rb"[A-Za-z0-9+/_\-\r\n]"
_TO_STANDARD = bytes.maketrans(b"-_", b"+/")


def _pattern(shape: Shape, width: int, le: bool) -> bytes:
    """The regex for the shape with each character `width` bytes wide (little or big endian)."""
    pad = b"\0" * (width - 1)

    def unit(char: bytes) -> bytes:
        return b"(?:" + (char + pad if le else pad + char) + b")"

    chars = b"".join(unit(re.escape(bytes([c]))) for c in shape.prefix)
    first = unit(b"[" + shape.also + shape.alphabet + b"]") + b"{%d}" % shape.min_length
    return chars + first + unit(b"[" + shape.alphabet + b"]") + b"*"


@dataclass(frozen=True)
class Shape:
    """`prefix` followed by at least `min_length` characters of the regex class `alphabet`.

    The first `min_length` may also be characters of `also` (another alphabet for the same
    value: base64's `+/` for its URL-safe `-_`); what follows them is `alphabet` only, so a
    match does not run on into the `/` after a token in a path."""

    prefix: bytes
    alphabet: bytes
    min_length: int
    also: bytes = b""
    _text: re.Pattern[bytes] = field(init=False, repr=False)
    _hex: re.Pattern[bytes] = field(init=False, repr=False)
    _wide: tuple[re.Pattern[bytes], ...] = field(init=False, repr=False)
    _b64_run: re.Pattern[bytes] = field(init=False, repr=False)
    _b64_min: int = field(init=False, repr=False)

    def __post_init__(self) -> None:
        wide = [_pattern(self, width, le) for width in (2, 4) for le in (True, False)]
        hex_text = self.prefix.hex().encode() + b"(?:[0-9a-f]{2}){%d,}" % self.min_length
        run = -(-(len(self.prefix) + self.min_length) * 4 // 3)
        set_ = object.__setattr__  # a frozen dataclass computing its own derived fields
        set_(self, "_text", re.compile(_pattern(self, 1, True)))
        set_(self, "_hex", re.compile(hex_text))
        set_(self, "_wide", tuple(re.compile(p) for p in wide))
        # Anchored at a run's start (the lookbehind), so a long run is not retried at each of
        # its characters: linear.
        run_re = b"(?<!" + _B64_RUN_CHARS + b")" + _B64_RUN_CHARS + b"{%d,}" % run
        set_(self, "_b64_run", re.compile(run_re))
        set_(self, "_b64_min", run)

    def found(self, view: bytes, squeezed: bytes, lowered: bytes) -> bool:
        """True if the shape is in `view` (raw, UTF-16/32, hex, base64 inside it). `squeezed` is
        `view` without whitespace, `lowered` is `squeezed` lowercased."""
        if self._hex.search(lowered) or self._in_text(view):
            return True
        # Whitespace inside a value (a line break in a form field, a folded header) is what a
        # reader drops when it copies the value back.
        if squeezed != view and self._in_text(squeezed):
            return True
        return any(self._in_text(decoded) for decoded in self._base64_decoded(view))

    def _in_text(self, data: bytes) -> bool:
        if self._text.search(data):
            return True
        return b"\0" in data and any(p.search(data) for p in self._wide)

    def spans(self, data: bytes, lowered: bytes) -> list[tuple[int, int]]:
        """Where `data` (and `lowered`, the same lowercased) holds the shape raw, UTF-16/32 or
        hex: what can be cut out in place."""
        patterns = [(self._text, data), (self._hex, lowered)]
        if b"\0" in data:
            patterns += [(p, data) for p in self._wide]
        return [m.span() for p, haystack in patterns for m in p.finditer(haystack)]

    def _base64_decoded(self, view: bytes) -> Iterator[bytes]:
        for m in self._b64_run.finditer(view):
            run = m[0].translate(_TO_STANDARD, b"\r\n")
            if len(run) < self._b64_min:
                continue
            for offset in range(4):
                chunk = run[offset:]
                # A last partial group still holds whole bytes (unless it is one character).
                chunk = chunk[:-1] if len(chunk) % 4 == 1 else chunk + b"=" * (-len(chunk) % 4)
                yield base64.b64decode(chunk)
