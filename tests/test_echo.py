"""The echo guard finds a credential in every encoding it promises to."""

from __future__ import annotations

import base64
import binascii
import re
from urllib.parse import quote, quote_plus

import pytest

from turret.echo import MARKER, Redactor

SECRET = "CANARY-s3cr3t/+=&:value"


@pytest.mark.parametrize(
    "form",
    [
        SECRET.encode(),
        base64.b64encode(SECRET.encode()),
        base64.urlsafe_b64encode(SECRET.encode()),
        base64.urlsafe_b64encode(SECRET.encode()).rstrip(b"="),
        quote(SECRET, safe="").encode(),
        re.sub("%[0-9A-F]{2}", lambda m: m[0].lower(), quote(SECRET, safe="")).encode(),
        quote_plus(SECRET).encode(),
        binascii.hexlify(SECRET.encode()),
        binascii.hexlify(SECRET.encode()).upper(),
    ],
)
def test_redactor_finds_each_encoding(form: bytes) -> None:
    out, n = Redactor([SECRET]).redact(b"before " + form + b" after")
    assert n == 1 and out == b"before " + MARKER + b" after"


@pytest.mark.parametrize("prefix", [b"", b"u", b"us", b"user:", b"a much longer prefix "])
def test_redactor_finds_secret_inside_longer_base64(prefix: bytes) -> None:
    blob = base64.b64encode(prefix + SECRET.encode() + b" and a tail")
    out, n = Redactor([SECRET]).redact(blob)
    assert n >= 1 and MARKER in out


def test_redactor_leaves_other_data_alone() -> None:
    data = b'{"hello": "world", "n": 12345}'
    assert Redactor([SECRET]).redact(data) == (data, 0)
    assert Redactor([]).redact(data) == (data, 0)


def test_redactor_header_text() -> None:
    assert Redactor([SECRET]).redact_text(f"Bearer {SECRET}") == ("Bearer [REDACTED]", 1)
