"""Scrubbing what gets recorded: no secret an agent sent reaches an audit field or a log line.

Pure: works on bytes and strings with the guards' `Redactor`s, no I/O.
"""

from __future__ import annotations

from urllib.parse import unquote_to_bytes

from turret.capabilities.strictjson import searchable
from turret.echo import MARKER, Redactor
from turret.exfil import TokenGuard, carries


class Scrubber:
    """Redacts secrets an agent put into what gets recorded (a token pasted into a path).

    Every recorded string that could hold one comes from what the agent sent: the request line,
    and a body once `look_at` is given it (no header name or value is recorded). So that is
    searched once, in every view `decoded_views` gives, and recorded strings are scrubbed one by
    one only when it holds a secret.
    """

    def __init__(self, redactor: Redactor, tokens: TokenGuard, sent: bytes) -> None:
        self._redactor = redactor
        self._tokens = tokens
        self._sent = [sent]
        self._needed: bool | None = None

    def look_at(self, data: bytes) -> None:
        """Also consider `data` (a request body that recorded fields are taken from)."""
        self._sent.append(data)
        if not self._needed:
            self._needed = None

    def __call__(self, text: str) -> str:
        if self._needed is None:
            # Checked on first use, after authentication has added the caller's own token.
            guards = (self._redactor, self._tokens.redactor)
            self._needed = holds_secret(b"\n".join(self._sent), guards)
        return scrub(text, self._redactor, self._tokens) if self._needed else text


def decoded_views(data: bytes) -> list[bytes]:
    """`data` as a reader of a record might decode it: as is, percent-decoded, JSON-unescaped,
    and both (the views the guards do not take themselves)."""
    return [data, searchable(data), searchable(unquote_to_bytes(data))]


def holds_secret(data: bytes, guards: tuple[Redactor, ...]) -> bool:
    """True if any decoded view of `data` carries a value one of `guards` knows."""
    return any(carries(view, guards) for view in decoded_views(data))


def scrub(text: str, redactor: Redactor, tokens: TokenGuard) -> str:
    """`text` with every credential and every known agent token redacted; replaced whole by the
    marker when a secret is still there once decoded (it cannot be cut out in place)."""
    text = redactor.redact_text(text)[0]
    text = tokens.redactor.redact_text(text)[0]
    if holds_secret(text.encode("latin-1", "replace"), (redactor, tokens.redactor)):
        return MARKER.decode()
    return text
