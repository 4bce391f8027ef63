"""Echo guard: find and redact credential values in any form a client could decode.

An upstream may reflect what it received (a debug endpoint, an error page quoting the request,
a redirect URL), and an agent may try to smuggle a secret out. The guard is decode-then-scan:
the data is normalised into each view a client could read (`turret.views`), and each view is
searched, in one pass, by a multi-pattern automaton built once per `Redactor` for the plain
forms of every value and of its NFKC form: raw, URL-encoded, JSON- and HTML-escaped, UTF-16/32,
base64 in both alphabets (also embedded in a longer base64 text) and hex in any letter case.
Each view is also searched with whitespace removed (base64 and hex wrapped at any line length).

`redact` replaces, in place, every occurrence of those forms in the raw bytes; what is left that
a decoded view still shows cannot be cut out without knowing how the client decodes, so then
nothing of the data is returned (`ResponseWithheld`).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import html
import json
import re
import unicodedata
from collections.abc import Callable, Iterable
from typing import TypeVar
from urllib.parse import quote, quote_plus

from ahocorasick_rs import BytesAhoCorasick, Implementation, MatchKind

from turret.errors import ResponseWithheld
from turret.shapes import Shape
from turret.views import WHITESPACE, WIDE_CODECS, views

MARKER = b"[REDACTED]"
# Inputs larger than this are scanned in a worker thread by the `*_async` variants: a 64 KiB
# body takes well under a millisecond, a larger one could hold up other agents' requests.
THRESHOLD = 64 * 1024
_MIN_EMBEDDED_CORE = 8  # shorter base64 cores would match unrelated text
CONTIGUOUS_NFA = Implementation.ContiguousNFA
_GO_ESCAPES = str.maketrans({"&": "\\u0026", "<": "\\u003c", ">": "\\u003e"})

T = TypeVar("T")


def _lower_escapes(encoded: bytes) -> bytes:
    return re.sub(rb"%[0-9A-F]{2}", lambda m: m[0].lower(), encoded)


def text_forms(value: bytes) -> set[bytes]:
    """How text formats write `value`: raw, URL-encoded, JSON string, HTML text."""
    text = value.decode("utf-8", "surrogateescape")
    forms = {value}
    for q in (quote, quote_plus):
        encoded = q(value, safe="").encode("ascii")
        forms |= {encoded, _lower_escapes(encoded)}
    for ascii_only in (True, False):
        escaped = json.dumps(text, ensure_ascii=ascii_only)[1:-1]
        go_style = escaped.translate(_GO_ESCAPES)  # Go's encoder also escapes & < >
        for form in (escaped, go_style, escaped.replace("/", "\\/")):
            forms.add(form.encode("utf-8", "surrogateescape"))
    for quote_too in (True, False):
        forms.add(html.escape(text, quote=quote_too).encode("utf-8", "surrogateescape"))
    return forms


def base64_forms(value: bytes) -> set[bytes]:
    """`value` in base64, standard and URL-safe, padded or not, and inside a longer text."""
    forms = set()
    for enc in (base64.b64encode, base64.urlsafe_b64encode):
        forms |= {enc(value), enc(value).rstrip(b"=")}
        # `value` inside a longer base64 text: at each of the three byte alignments, the whole
        # 4-character groups that encode only bytes of `value` are the same whatever surrounds it.
        for offset in range(3):
            encoded = enc(b"\0" * offset + value)
            core = encoded[4 if offset else 0 : ((offset + len(value)) // 3) * 4]
            if len(core) >= _MIN_EMBEDDED_CORE:
                forms.add(core)
    return forms


def wide_forms(value: bytes) -> set[bytes]:
    """`value` in UTF-16 and UTF-32 (both byte orders): found at any alignment in the data."""
    text = value.decode("utf-8", "surrogateescape")
    try:
        return {text.encode(codec) for codec in WIDE_CODECS}
    except UnicodeEncodeError:  # not valid UTF-8: it has no UTF-16 form
        return set()


def normal_forms(value: bytes) -> set[bytes]:
    """`value`, and its NFKC form if that differs: the HTML view normalises what it reads, and
    a value with its compatibility characters folded still gives all the rest of it away."""
    text = value.decode("utf-8", "surrogateescape")
    return {value, unicodedata.normalize("NFKC", text).encode("utf-8", "surrogateescape")}


def literal_forms(value: bytes) -> set[bytes]:
    """The forms the automaton searches for: text forms and UTF-16/32 of `value` and of its
    NFKC form, each also in base64."""
    plain: set[bytes] = set()
    for form in normal_forms(value):
        plain |= text_forms(form) | wide_forms(form)
    return plain.union(*(base64_forms(form) for form in plain))


def encodings(value: bytes) -> set[bytes]:
    """Every literal form of `value` the guard knows (hex in both cases; the guard also finds
    mixed-case hex and every decoded view, which no fixed list can show)."""
    forms = literal_forms(value) | {binascii.hexlify(value), binascii.hexlify(value).upper()}
    return {f for f in forms if f}


def wire_bytes(text: str) -> bytes:
    """The bytes a header str is sent as: aiohttp maps header bytes that are not UTF-8 to lone
    surrogates on input and leaves them out on output, so they are left out here as well."""
    return text.encode("utf-8", "ignore")


class _Automaton:
    """Leftmost-longest multi-pattern search over bytes (a whole encoded value wins over a
    shorter form inside it)."""

    def __init__(self, patterns: Iterable[bytes]) -> None:
        ordered = sorted(p for p in patterns if p)
        # A contiguous NFA: as fast to search here as the DFA the library picks for small sets,
        # at a small part of its memory (the DFA took ~2.7 MiB for two credentials' forms).
        self._ac = (
            BytesAhoCorasick(
                ordered, matchkind=MatchKind.LeftmostLongest, implementation=CONTIGUOUS_NFA
            )
            if ordered
            else None
        )
        self.spacey = any(p.translate(None, WHITESPACE) != p for p in ordered)

    def spans(self, data: bytes) -> list[tuple[int, int]]:
        if self._ac is None:
            return []
        return [(start, end) for _, start, end in self._ac.find_matches_as_indexes(data)]

    def found(self, data: bytes) -> bool:
        return self._ac is not None and bool(self._ac.find_matches_as_indexes(data))


def _merge(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged


Forms = tuple[frozenset[bytes], frozenset[bytes]]  # literal forms, lowercase hex forms


def search_forms(values: Iterable[str]) -> Forms:
    """What a `Redactor` of `values` searches for: their literal forms and their hex."""
    literal: set[bytes] = set()
    hexes: set[bytes] = set()
    for v in values:
        raw = v.encode("utf-8", "surrogateescape")
        if raw:
            literal |= literal_forms(raw)
            hexes.add(binascii.hexlify(raw))
    return frozenset(literal), frozenset(hexes)


class Redactor:
    """Finds and replaces every form of a fixed set of values, and of values of a `Shape`."""

    def __init__(self, values: Iterable[str], *, shapes: tuple[Shape, ...] = ()) -> None:
        self._parts: tuple[tuple[_Automaton, _Automaton], ...] = ()
        self.forms = search_forms(values)
        literal, hexes = self.forms
        # Automata in pairs: the literal forms, and hex searched in lowercased data (any letter
        # case). One pair, except in a redactor `combined` from others' pairs.
        if literal:
            self._parts = ((_Automaton(literal), _Automaton(hexes)),)
        self._shapes = shapes
        self._empty = not literal and not shapes

    @classmethod
    def of_forms(cls, forms: Forms) -> Redactor:
        """A redactor for what `search_forms` gave (of several redactors' values, say)."""
        out = cls([])
        out.forms = forms
        if forms[0]:
            out._parts = ((_Automaton(forms[0]), _Automaton(forms[1])),)
            out._empty = False
        return out

    @classmethod
    def combined(cls, redactors: Iterable[Redactor], *, shapes: tuple[Shape, ...]) -> Redactor:
        """A redactor for the values of all of `redactors` and for `shapes`, reusing their
        automata (nothing is rebuilt)."""
        out = cls([], shapes=shapes)
        out._parts = tuple(part for r in redactors for part in r._parts)
        out._empty = not out._parts and not shapes
        return out

    def found(self, data: bytes) -> bool:
        """True if any view of `data` holds any form of any value."""
        return not self._empty and any(self._in_view(view) for view in views(data))

    def redact(self, data: bytes) -> tuple[bytes, int]:
        """`data` with every match replaced in place, and how many were replaced.

        Raises `ResponseWithheld` if a decoded view of the result still holds a value.
        """
        if self._empty or not data:
            return data, 0
        clean, count = self._in_place(data)
        if self.found(clean):
            raise ResponseWithheld(
                "the upstream's answer holds credential material that cannot be redacted in "
                "place, so none of it is returned",
                reason="echo guard: credential material in a decoded view of the answer",
            )
        return clean, count

    def redact_text(self, text: str) -> tuple[str, int]:
        """The same for a header value or a recorded field, compared in the bytes it is sent
        as; a text that still holds a value after redaction in place is replaced whole."""
        if self._empty or not text:
            return text, 0
        clean, count = self._in_place(wire_bytes(text))
        if self.found(clean):
            return MARKER.decode(), max(count, 1)
        return (clean.decode("utf-8", "surrogateescape"), count) if count else (text, 0)

    async def redact_async(self, data: bytes) -> tuple[bytes, int]:
        """`redact`, in a worker thread when `data` is larger than `THRESHOLD`."""
        return await offload(self.redact, data)

    def _in_view(self, view: bytes) -> bool:
        squeezed = view.translate(None, WHITESPACE)
        for literal, _ in self._parts:
            if literal.found(squeezed) or (literal.spacey and literal.found(view)):
                return True
        lowered = squeezed.lower()
        if any(hexed.found(lowered) for _, hexed in self._parts):
            return True
        return any(shape.found(view, squeezed, lowered) for shape in self._shapes)

    def _in_place(self, data: bytes) -> tuple[bytes, int]:
        lowered = data.lower()  # ASCII-only, so offsets are those of `data`
        spans = []
        for literal, hexed in self._parts:
            spans += literal.spans(data) + hexed.spans(lowered)
        for shape in self._shapes:
            spans += shape.spans(data, lowered)
        if not spans:
            return data, 0
        merged = _merge(spans)
        out: list[bytes] = []
        last = 0
        for start, end in merged:
            out += [data[last:start], MARKER]
            last = end
        out.append(data[last:])
        return b"".join(out), len(merged)


def found_by_any(data: bytes, redactors: Iterable[Redactor]) -> bool:
    """True if any view of `data` holds a value one of `redactors` knows: each view is made once
    and searched by each redactor (`Redactor.found` of each would make them all again)."""
    active = [r for r in redactors if not r._empty]
    if not active or not data:  # no form of a value is empty: empty data holds none
        return False
    return any(r._in_view(view) for view in views(data) for r in active)


async def offload(fn: Callable[[bytes], T], data: bytes) -> T:
    """`fn(data)`, run in a worker thread if `data` is larger than `THRESHOLD`, so scanning a
    big body does not hold up the event loop (the automaton releases the GIL while it runs)."""
    if len(data) > THRESHOLD:
        return await asyncio.to_thread(fn, data)
    return fn(data)
