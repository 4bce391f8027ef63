"""Views of a byte string: the forms a client could decode it to, each made in one linear pass.

The guards are decode-then-scan: rather than one pattern per encoding of a secret, the data is
normalised into every reading a client could give it, and each reading is searched for the
plain forms. A view is made only when it can differ from the one it comes from (no `%`, no
percent view; no NUL byte, no UTF-16/32 view), so the common case costs a single pass.

Views made, and how they compose (a constant number, so scanning stays linear in the data):

- the data itself, and its UTF-16 LE/BE and UTF-32 LE/BE readings when it holds NUL bytes
  (aligned by a byte-order mark if there is one), re-encoded to UTF-8;
- on each of those, `ROUNDS` rounds of the unescaping steps, each applied to the previous
  result: percent-decoding (also with `+` as a space, as a side view), JSON/JavaScript/Python
  string escapes (`\\uXXXX` incl. surrogate pairs, `\\u{...}`, `\\UXXXXXXXX`, `\\xNN`, octal,
  `\\/` and the one-letter escapes), MIME quoted-printable (`=XX`, soft line breaks) and the
  reading of HTML/XML text (markup and CDATA markers removed, character references decoded,
  default-ignorable characters such as zero-width spaces and soft hyphens removed, NFKC
  normalised: what a parser, a renderer or a Unicode-normalising reader shows); and, as a side
  view, character references decoded with the markup kept (the value of an attribute).
  Any composition of up to `ROUNDS` of these steps, in any order, is undone (deeper percent
  nesting too: a percent step decodes up to `PERCENT_DEPTH` levels).

Whitespace inside base64 or hex runs (MIME line wrapping) and letter case of hex are handled by
the scanner (`turret.echo`), which looks at each view with whitespace removed and lowercased.
"""

from __future__ import annotations

import codecs
import html
import html.entities
import re
import unicodedata
from collections.abc import Callable, Iterator
from urllib.parse import unquote_to_bytes

ROUNDS = 3
PERCENT_DEPTH = 4
WHITESPACE = b" \t\r\n\f\v"

_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)
WIDE_CODECS = ("utf-16-le", "utf-16-be", "utf-32-le", "utf-32-be")

_ESCAPE = re.compile(
    rb"\\(?:"
    rb"[uU]([dD][89abAB][0-9a-fA-F]{2})\\[uU]([dD][c-fC-F][0-9a-fA-F]{2})"  # surrogate pair
    rb"|u([0-9a-fA-F]{4})"
    rb"|u\{([0-9a-fA-F]{1,6})\}"
    rb"|U([0-9a-fA-F]{8})"
    rb"|x([0-9a-fA-F]{2})"
    rb"|([0-7]{1,3})"
    rb"|(.))",
    re.DOTALL,
)
_SIMPLE = {b"n": b"\n", b"t": b"\t", b"r": b"\r", b"b": b"\b", b"f": b"\f", b"v": b"\v"}


def _code_point(cp: int) -> bytes:
    if cp > 0x10FFFF:
        return b"\xef\xbf\xbd"
    # A lone surrogate cannot be part of a UTF-8 secret; it is kept as an invalid sequence.
    return chr(cp).encode("utf-8", "surrogatepass")


def _unescape_one(m: re.Match[bytes]) -> bytes:
    hi, lo, u4, ubrace, u8, x2, octal, other = m.groups()
    if hi is not None and lo is not None:
        return _code_point(0x10000 + ((int(hi, 16) - 0xD800) << 10) + (int(lo, 16) - 0xDC00))
    for digits in (u4, ubrace, u8):
        if digits is not None:
            return _code_point(int(digits, 16))
    if x2 is not None:
        return bytes([int(x2, 16)])  # Python bytes repr: \xNN is one byte
    if octal is not None:
        return bytes([int(octal, 8) & 0xFF])
    return _SIMPLE.get(other, other)  # \/ \" \\ \' and any unknown escape: the character


def unescape_string(data: bytes) -> bytes | None:
    """`data` with JSON / JavaScript / Python string escapes undone, or None if it has none."""
    if b"\\" not in data:
        return None
    return _ESCAPE.sub(_unescape_one, data)


# What can start a character reference: numeric, a name ended by `;`, or one of the legacy names
# HTML also accepts without it. Only these are handed to `html.unescape` (a bare `&` in a query
# string costs nothing).
_LEGACY = sorted((n for n in html.entities.html5 if not n.endswith(";")), key=len, reverse=True)
_HTML_REF = re.compile(
    r"&(?:#[xX][0-9a-fA-F]+;?|#[0-9]+;?|[A-Za-z][A-Za-z0-9]{0,31};|(?:" + "|".join(_LEGACY) + "))"
)


# Markup a parser drops from the text: CDATA markers (their content is text), then tags and
# comments. `[^<>]*` stops at the next bracket, so a failed attempt costs no rescan: linear.
_MARKUP = re.compile(rb"<!\[CDATA\[|\]\]>|<[^<>]*>")
# Unicode's Default_Ignorable_Code_Point (DerivedCoreProperties.txt): invisible when rendered
# and removed by NFKC_Casefold, so "ad<SOFT HYPHEN>min" reads as "admin".
IGNORABLE = re.compile(
    "[\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180b-\u180f\u200b-\u200f\u202a-\u202e"
    "\u2060-\u206f\u3164\ufe00-\ufe0f\ufeff\uffa0\U0001bca0-\U0001bca3\U0001d173-\U0001d17a"
    "\U000e0000-\U000e0fff]"
)


def unescape_html(data: bytes) -> bytes | None:
    """`data` as a reader of HTML/XML text sees it, or None if nothing there can change it:
    markup removed, character references decoded, default-ignorable characters removed and
    compatibility characters (fullwidth letters, ligatures, math alphanumerics) NFKC-folded."""
    if b"&" not in data and b"<" not in data and data.isascii():
        return None
    if b"<" in data:
        data = _MARKUP.sub(b"", data)
    text = data.decode("utf-8", "surrogateescape")
    # html.unescape maps surrogate and out-of-range references to U+FFFD, so only the
    # surrogateescape'd original bytes are surrogates here.
    if "&" in text:
        text = _HTML_REF.sub(lambda m: html.unescape(m[0]), text)
    if not text.isascii():
        text = unicodedata.normalize("NFKC", IGNORABLE.sub("", text))
    return text.encode("utf-8", "surrogateescape")


def references_in_markup(data: bytes) -> bytes | None:
    """`data` with character references decoded and its markup KEPT, or None if it has no
    markup (then `unescape_html` decodes them alone): a value inside a tag, an attribute such as
    `<a title="&#116;...">`, as the reader of that attribute sees it. `unescape_html` removes
    the whole tag first, so without this view an encoded secret inside one would be unseen."""
    if b"&" not in data or b"<" not in data:
        return None
    text = _HTML_REF.sub(lambda m: html.unescape(m[0]), data.decode("utf-8", "surrogateescape"))
    if not text.isascii():
        text = unicodedata.normalize("NFKC", IGNORABLE.sub("", text))
    return text.encode("utf-8", "surrogateescape")


# Quoted-printable (RFC 2045): `=XX` is a byte, `=` at the end of a line (after optional
# blanks) is a soft line break. Encoded words (`=?utf-8?q?...?=`) use the same escapes.
_QP = re.compile(rb"=(?:[ \t]*\r?\n|([0-9A-Fa-f]{2}))")


def unescape_qp(data: bytes) -> bytes | None:
    """`data` with quoted-printable escapes and soft line breaks undone, or None if it has
    no `=`."""
    if b"=" not in data:
        return None
    return _QP.sub(lambda m: bytes([int(m[1], 16)]) if m[1] else b"", data)


def percent_decoded(data: bytes) -> Iterator[bytes]:
    """The successive percent-decodings of `data` (up to `PERCENT_DEPTH`, while they change)."""
    for _ in range(PERCENT_DEPTH):
        if b"%" not in data:
            return
        decoded = unquote_to_bytes(data)
        if decoded == data:
            return
        yield decoded
        data = decoded


def wide_readings(data: bytes) -> Iterator[bytes]:
    """`data` read as UTF-16/32 and re-encoded to UTF-8, when it holds NUL bytes."""
    if b"\0" not in data:
        return
    for bom, codec in _BOMS:
        if data.startswith(bom):
            yield data[len(bom) :].decode(codec, "replace").encode("utf-8")
            return
    for codec in WIDE_CODECS:
        yield data.decode(codec, "replace").encode("utf-8")


def _unescape_steps(view: bytes) -> Iterator[bytes]:
    """The unescaping rounds over one base view, each result once."""
    current = view
    for _ in range(ROUNDS):
        changed = False
        if b"+" in current and b"%" in current:
            # Form encoding: `+` is a space. A side branch, as `+` may also be literal.
            yield from percent_decoded(current.replace(b"+", b" "))
        for decoded in percent_decoded(current):
            yield decoded
            current, changed = decoded, True
        # HTML references read as they are, too: a client reading HTML does not first take
        # string escapes: `&colon;\ ` reads as `:\ ` to it, though `\ ` unescapes away.
        html_only = unescape_html(current)
        attributes = references_in_markup(current)
        step: Callable[[bytes], bytes | None]
        for step in (unescape_string, unescape_qp, unescape_html):
            decoded_or_none = step(current)
            if decoded_or_none is not None and decoded_or_none != current:
                yield decoded_or_none
                current, changed = decoded_or_none, True
        if html_only is not None and html_only != current:
            yield html_only
        if attributes is not None and attributes != current:
            yield attributes
        if not changed:
            return


def views(data: bytes) -> Iterator[bytes]:
    """`data`, then every decoded view of it (see the module docstring), lazily."""
    yield data
    for base in (data, *wide_readings(data)):
        if base is not data:
            yield base
        yield from _unescape_steps(base)


def max_views() -> int:
    """An upper bound on how many views `views` makes of any input: the linearity guarantee."""
    # percent chain, its `+` side views, string, quoted-printable, HTML, HTML alone, references
    # inside markup
    per_round = PERCENT_DEPTH * 2 + 5
    return 1 + (1 + len(WIDE_CODECS)) * (1 + ROUNDS * per_round)
