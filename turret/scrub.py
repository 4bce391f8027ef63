"""Scrubbing what gets recorded: no secret an agent sent reaches an audit field or a log line.

Pure: works on bytes and strings with the guards' `Redactor`s, no I/O.
"""

from __future__ import annotations

from turret.echo import Redactor
from turret.exfil import TokenGuard, carries, scrub_text


class Scrubber:
    """Redacts secrets an agent put into what gets recorded (a token pasted into a path).

    Every recorded string that could hold one comes from what the agent sent: the request line,
    and a body once `look_at` is given it (no header name or value is recorded). So that is
    searched once (in every view the guards decode), and recorded strings are scrubbed one by
    one only when it holds a secret.
    """

    def __init__(
        self,
        redactor: Redactor,
        tokens: TokenGuard,
        sent: bytes,
        extra: tuple[Redactor, ...] = (),
    ) -> None:
        self._redactor = redactor
        self._tokens = tokens
        self._extra = extra  # credentials minted since the runtime was built
        self._sent = [sent]
        self._needed: bool | None = None

    def look_at(self, data: bytes) -> None:
        """Also consider `data` (a request body that recorded fields are taken from)."""
        self._sent.append(data)
        if not self._needed:
            self._needed = None

    def needed(self) -> bool:
        """True if what the agent sent holds a secret, so recorded strings must be scrubbed.
        Checked on first use, after authentication has added the caller's own token."""
        if self._needed is None:
            guards = (self._redactor, self._tokens.redactor, *self._extra)
            # Each part on its own: joined, markup opened in one (`<` in the path) and closed
            # in the next (`>` in the body) would read as one tag and hide what is between.
            self._needed = any(carries(part, guards) for part in self._sent)
        return self._needed

    def __call__(self, text: str) -> str:
        if not self.needed():
            return text
        return scrub(text, self._redactor, self._tokens, self._extra)


def scrub(
    text: str, redactor: Redactor, tokens: TokenGuard, extra: tuple[Redactor, ...] = ()
) -> str:
    """`text` with every credential and every agent token redacted: in place where that is
    possible, otherwise (a secret seen only once decoded) the whole text is the marker.
    `extra`: more guards (credentials minted since the runtime was built)."""
    return scrub_text(text, (redactor, tokens.redactor, *extra))
