# ruff: noqa: RUF001 - look-alike characters are the attack under test
"""Red team, echo guard: representations a client decodes that the issue-10 suite did not try.

Each encoder below is something an ordinary client undoes without being asked: a MIME reader
(quoted-printable, soft line breaks, encoded words), an XML or HTML parser (CDATA sections,
markup between the characters, comments, references to invisible characters), a renderer
(zero-width and other default-ignorable characters), a Unicode-normalising reader (fullwidth and
other compatibility forms). Held variants are pinned alongside.
"""

from __future__ import annotations

import base64
import json
import quopri
import unicodedata
from collections.abc import Callable

import pytest

from turret.echo import MARKER, Redactor
from turret.errors import ResponseWithheld
from turret.views import max_views, views

SECRETS = ["CANARY-gitea-token-0123456789abcdef", "CANARY_s3cr3t/+=&:vAlue.9", "CANARY-pässwörd-ü1"]
Enc = Callable[[str], bytes]


def _qp_all(s: str, fmt: bytes = b"=%02X") -> bytes:
    return b"".join(fmt % b for b in s.encode())


def _fullwidth(s: str) -> str:
    return "".join(chr(ord(c) + 0xFEE0) if 0x21 <= ord(c) <= 0x7E else c for c in s)


def _split(s: str, middle: str) -> bytes:
    return (s[:9] + middle + s[9:]).encode()


BYPASSES: dict[str, Enc] = {
    "qp-every-byte": _qp_all,
    "qp-lower-hex": lambda s: _qp_all(s, b"=%02x"),
    "qp-soft-break-crlf": lambda s: _split(s, "=\r\n"),
    "qp-soft-break-lf": lambda s: _split(s, "=\n"),
    "qp-soft-break-trailing-space": lambda s: _split(s, "= \t\r\n"),
    "qp-stdlib": lambda s: quopri.encodestring(s.encode(), quotetabs=True),
    "qp-inside-json": lambda s: json.dumps(_qp_all(s).decode())[1:-1].encode(),
    "mime-encoded-word-q": lambda s: b"=?utf-8?q?" + _qp_all(s) + b"?=",
    "xml-cdata-split": lambda s: b"<![CDATA[" + _split(s, "]]><![CDATA[") + b"]]>",
    "xml-empty-cdata-between": lambda s: _split(s, "<![CDATA[]]>"),
    "html-tag-between": lambda s: _split(s, "<b></b>"),
    "html-comment-between": lambda s: _split(s, "<!-- x -->"),
    "html-span-between": lambda s: _split(s, '</span><span class="x">'),
    "zero-width-space": lambda s: _split(s, "\u200b"),
    "zero-width-joiner-twice": lambda s: (s[:3] + "\u200d" + s[3:12] + "\u200d" + s[12:]).encode(),
    "word-joiner": lambda s: _split(s, "\u2060"),
    "byte-order-mark-inside": lambda s: _split(s, "\ufeff"),
    "soft-hyphen-raw": lambda s: _split(s, "\u00ad"),
    "soft-hyphen-entity": lambda s: _split(s, "&shy;"),
    "zwsp-decimal-reference": lambda s: _split(s, "&#8203;"),
    "zwsp-json-escape": lambda s: _split(s, "\\u200b"),
    "zwsp-percent": lambda s: _split(s, "%E2%80%8B"),
    "fullwidth": lambda s: _fullwidth(s).encode(),
    "fullwidth-json-escaped": lambda s: "".join(f"\\u{ord(c):04x}" for c in _fullwidth(s)).encode(),
    "fullwidth-percent": lambda s: "".join(f"%{b:02X}" for b in _fullwidth(s).encode()).encode(),
    "math-bold-digits": lambda s: "".join(
        chr(0x1D7CE + ord(c) - 48) if c.isdigit() and c.isascii() else c for c in s
    ).encode(),
    "nfd-decomposed": lambda s: unicodedata.normalize("NFD", s).encode(),
}

# Variants that already held before the red team's changes, pinned so they keep holding.
HELD: dict[str, Enc] = {
    "html-decimal-leading-zeros": lambda s: "".join(f"&#000{ord(c)};" for c in s).encode(),
    "html-hex-leading-zeros": lambda s: "".join(f"&#x0000{ord(c):x};" for c in s).encode(),
    "html-hex-upper-X-zeros": lambda s: "".join(f"&#X000{ord(c):X};" for c in s).encode(),
    "html-hex-no-semicolon": lambda s: "".join(f"&#x{ord(c):x}" for c in s).encode(),
    "html-decimal-no-semicolon": lambda s: "".join(f"&#{ord(c)}" for c in s).encode(),
    "html-forty-zeros": lambda s: "".join(f"&#{'0' * 40}{ord(c)};" for c in s).encode(),
    "html-amp-escaped-twice": lambda s: "".join(f"&amp;amp;#{ord(c)};" for c in s).encode(),
    "json-in-json": lambda s: json.dumps(json.dumps(s)).encode(),
    "mime-encoded-word-b": lambda s: b"=?utf-8?b?" + base64.b64encode(s.encode()),
    "pct-utf8-of-non-ascii": lambda s: "".join(f"%{b:02x}" for b in s.encode()).encode(),
    "utf8-bom-before": lambda s: b"\xef\xbb\xbf" + s.encode(),
}


def _check(secret: str, data: bytes) -> None:
    redactor = Redactor([secret])
    assert redactor.found(data)
    try:
        clean, count = redactor.redact(data)
    except ResponseWithheld as exc:
        assert secret not in exc.message and secret not in exc.reason
        return
    assert count >= 1 and MARKER in clean
    assert not redactor.found(clean)


@pytest.mark.parametrize("how", sorted(BYPASSES))
@pytest.mark.parametrize("secret", SECRETS)
def test_redteam_echo_client_decodings_are_found(how: str, secret: str) -> None:
    _check(secret, b'{"before": 1, "x": "' + BYPASSES[how](secret) + b'", "after": 2}')


@pytest.mark.parametrize("how", sorted(HELD))
@pytest.mark.parametrize("secret", SECRETS)
def test_redteam_echo_held_variants_stay_found(how: str, secret: str) -> None:
    _check(secret, b"<p>" + HELD[how](secret) + b"</p>")


@pytest.mark.parametrize("secret", ["CANARY-\ufb01le-key-0042", "CANARY-Ｗide-key-0042"])
def test_redteam_echo_secret_that_normalisation_changes(secret: str) -> None:
    """A secret NFKC changes is also found in its normalised form (which leaks all of it but
    the compatibility characters), and still in its own form."""
    normalised = unicodedata.normalize("NFKC", secret)
    for data in (normalised.encode(), secret.encode(), json.dumps(secret).encode()):
        _check(secret, b"x " + data + b" y")


@pytest.mark.parametrize(
    "data",
    [
        b"<html><body><p>Tom &amp; Jerry</p><![CDATA[x]]></body></html>",
        b"subject: =?utf-8?q?hello_world?= a=3D1 b=20c",
        "Ｆｕｌｌｗｉｄｔｈ text and ﬁ ligatures, zero\u200bwidth".encode(),
        b"CANARY-gitea-token-0123456789abcde",  # one character short
    ],
)
def test_redteam_echo_new_views_spare_ordinary_text(data: bytes) -> None:
    assert not Redactor(SECRETS).found(data)


def test_redteam_echo_view_bound_holds_with_new_steps() -> None:
    """Every kind of escape at once, repeated: the number of views stays under the bound."""
    data = (
        b"%25%41 &amp;#65; \\u0041 =41=\r\n <b>x</b> <![CDATA[y]]> \xef\xbc\xa1 \xe2\x80\x8b"
        + "note".encode("utf-16-le")
    ) * 50
    assert sum(1 for _ in views(data)) <= max_views() <= 210
