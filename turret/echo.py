"""Echo guard: redact credential values an upstream sends back, in any common encoding.

An upstream may reflect what it received (a debug endpoint, an error page quoting the request,
a redirect URL). Before a response reaches the agent, every occurrence of a loaded credential or
of a value Turret injected is replaced, raw or base64 (standard and URL-safe, also embedded in a
longer base64 text), URL-encoded or hex.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable
from urllib.parse import quote, quote_plus

MARKER = b"[REDACTED]"
_MIN_EMBEDDED_CORE = 8  # shorter base64 cores would match unrelated text


def encodings(value: bytes) -> set[bytes]:
    """Every form of `value` the guard looks for."""
    forms = {value, binascii.hexlify(value), binascii.hexlify(value).upper()}
    for enc in (base64.b64encode, base64.urlsafe_b64encode):
        forms.add(enc(value))
        forms.add(enc(value).rstrip(b"="))
        # `value` inside a longer base64 text: at each of the three byte alignments, the whole
        # 4-character groups that encode only bytes of `value` are the same whatever surrounds it.
        for offset in range(3):
            encoded = enc(b"\0" * offset + value)
            core = encoded[4 if offset else 0 : ((offset + len(value)) // 3) * 4]
            if len(core) >= _MIN_EMBEDDED_CORE:
                forms.add(core)
    for q in (quote, quote_plus):
        encoded = q(value, safe="").encode("ascii")
        forms.add(encoded)
        forms.add(re.sub(rb"%[0-9A-F]{2}", lambda m: m[0].lower(), encoded))
    return {f for f in forms if f}


class Redactor:
    """Replaces every encoding of a fixed set of values with `MARKER`."""

    def __init__(self, values: Iterable[str]) -> None:
        forms: set[bytes] = set()
        for v in values:
            forms |= encodings(v.encode("utf-8"))
        # Longest first, so a whole encoded value wins over a shorter form inside it.
        ordered = sorted(forms, key=lambda f: (-len(f), f))
        self._pattern = re.compile(b"|".join(re.escape(f) for f in ordered)) if ordered else None

    def found(self, data: bytes) -> bool:
        """True if `data` holds any form of any value (cheaper than `redact`)."""
        return self._pattern is not None and self._pattern.search(data) is not None

    def redact(self, data: bytes) -> tuple[bytes, int]:
        """`data` with every match replaced, and how many were replaced."""
        if self._pattern is None or not data:
            return data, 0
        return self._pattern.subn(MARKER, data)

    def redact_text(self, text: str) -> tuple[str, int]:
        """The same for a header value (latin-1 is how HTTP header bytes map to str)."""
        data, n = self.redact(text.encode("latin-1", "replace"))
        return (data.decode("latin-1"), n) if n else (text, 0)
