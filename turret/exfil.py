"""Outbound exfiltration guard: a request must not carry a secret Turret holds to an upstream.

A prompt-injected agent may try to send a credential, or an agent token, to a place it can read
back later (an issue comment, a paste, a query string logged by the upstream). Before anything is
forwarded, the path, query, forwarded headers and body are searched for every value Turret knows,
in every encoding the echo guard knows (raw, hex, base64 in both alphabets, URL-encoded), also
after one round of percent-decoding.

What Turret knows: every loaded credential (service credentials and `token_credential` agent
tokens) and the injected header values (the runtime's echo-guard `Redactor`), plus every agent
token presented to Turret since it started. Tokens configured as `token_sha256` are stored only as
digests, so such a token is guarded from the moment its agent first authenticates: in
particular, an agent's own token is always guarded on its own requests.
"""

from __future__ import annotations

from urllib.parse import unquote_to_bytes

from multidict import CIMultiDict

from turret.echo import Redactor


class TokenGuard:
    """The agent tokens presented to Turret so far (bounded: only valid tokens are kept)."""

    def __init__(self) -> None:
        self._tokens: set[str] = set()
        self.redactor = Redactor([])

    def remember(self, token: str) -> None:
        """Guard `token` from now on; called once an agent has authenticated with it."""
        if token not in self._tokens:
            self._tokens.add(token)
            self.redactor = Redactor(self._tokens)


def _views(data: bytes) -> list[bytes]:
    """`data` and, if it holds escapes, its percent-decoded forms (with and without `+`)."""
    if b"%" not in data and b"+" not in data:
        return [data]
    return [data, unquote_to_bytes(data), unquote_to_bytes(data.replace(b"+", b" "))]


def carries(data: bytes, guards: tuple[Redactor, ...]) -> bool:
    """True if `data`, or its percent-decoded forms, holds a value one of `guards` knows."""
    return any(guard.found(view) for view in _views(data) for guard in guards)


def find_secret(
    guards: tuple[Redactor, ...],
    *,
    path: str,
    query: str,
    headers: CIMultiDict[str],
    body: bytes,
) -> str | None:
    """Where the outbound request carries a guarded value ("body", "query", "header X"), or None.

    `headers` are the caller's headers that would be forwarded (before the credential is added).
    """
    # One pass over everything first: the parts are only looked at one by one after a hit. The
    # separator is not part of any encoding, so no match can span two parts.
    blob = "\n".join([path, query, *headers.values()]).encode("latin-1", "replace")
    if not carries(blob + b"\n" + body, guards):
        return None
    if carries(path.encode("latin-1", "replace"), guards):
        return "path"
    if carries(query.encode("latin-1", "replace"), guards):
        return "query"
    for name, value in headers.items():
        if carries(value.encode("latin-1", "replace"), guards):
            return f"header {name}"
    if carries(body, guards):
        return "body"
    return None
