"""Outbound exfiltration guard: a request must not carry a secret Turret holds to an upstream.

A prompt-injected agent may try to send a credential, or an agent token, to a place it can read
back later (an issue comment, a paste, a query string logged by the upstream). Before anything is
forwarded, the path, query, forwarded header names and values, and body are searched in every
view the echo guard makes (`turret.views`: percent-decoded to any depth in part or whole, JSON-
and HTML-unescaped, UTF-16/32, base64, hex...).

What is searched for: every loaded credential (service credentials and `token_credential` agent
tokens) and the injected header values (the runtime's echo-guard `Redactor`); every agent token
presented since start, also without its prefix; and anything shaped like an agent token
(`turret_` and at least 43 base64 characters of either alphabet), whatever
its digest, so a `token_sha256` agent's token is guarded before that agent was ever seen.
"""

from __future__ import annotations

from multidict import CIMultiDict

from turret.auth import TOKEN_ALPHABET, TOKEN_BODY_LENGTH, TOKEN_PREFIX
from turret.echo import THRESHOLD, Redactor, found_by_any, offload, wire_bytes
from turret.shapes import Shape

# The token in the standard base64 alphabet (`+` and `/` for `-` and `_`) is the same 32 bytes.
TOKEN_SHAPE = Shape(TOKEN_PREFIX.encode(), TOKEN_ALPHABET.encode(), TOKEN_BODY_LENGTH, also=b"+/")


GENERATION = 64  # tokens in the largest generation: bounds the automata one token rebuilds


class TokenGuard:
    """Agent tokens: every token-shaped value, and the tokens presented to Turret so far
    (bounded: only valid tokens are remembered)."""

    def __init__(self) -> None:
        self._tokens: set[str] = set()
        # Generations of remembered tokens, merged as a binary counter's digits carry (sizes 8,
        # 4, 1 for 13 tokens) up to GENERATION tokens, each searched by its own automata:
        # remembering a token builds its own and now and then a merged one, at most one
        # generation's worth; never one for every token each time (that took seconds at a few
        # hundred tokens, with the event loop stalled). n / GENERATION + 7 of them are searched.
        self._generations: list[tuple[int, Redactor]] = []
        self.redactor = Redactor([], shapes=(TOKEN_SHAPE,))

    def remember(self, token: str) -> None:
        """Guard `token` by value too (a token of another form would not match the shape), and
        its random part alone: without the well-known prefix it is still the token."""
        if token in self._tokens:
            return
        self._tokens |= {token, token.removeprefix(TOKEN_PREFIX)}
        gens = self._generations
        gens.append((1, Redactor({token, token.removeprefix(TOKEN_PREFIX)})))
        while len(gens) > 1 and gens[-1][0] == gens[-2][0] < GENERATION:
            (n, newer), (_, older) = gens.pop(), gens.pop()
            literal, hexes = older.forms[0] | newer.forms[0], older.forms[1] | newer.forms[1]
            gens.append((2 * n, Redactor.of_forms((literal, hexes))))
        self.redactor = Redactor.combined((r for _, r in gens), shapes=(TOKEN_SHAPE,))


def carries(data: bytes, guards: tuple[Redactor, ...]) -> bool:
    """True if any view of `data` holds a value one of `guards` knows."""
    return found_by_any(data, guards)


async def carries_async(data: bytes, guards: tuple[Redactor, ...]) -> bool:
    """`carries`, in a worker thread when `data` is larger than `THRESHOLD`."""
    return await offload(lambda d: carries(d, guards), data)


def find_secret(
    guards: tuple[Redactor, ...],
    *,
    path: str,
    query: str,
    headers: CIMultiDict[str],
    body: bytes,
) -> str | None:
    """Where the outbound request carries a guarded value, or None: "path", "query",
    "header name" (never the name itself, which would quote the secret), "header X" or "body".

    `headers` are the caller's headers that would be forwarded (before the credential is added).
    """
    # The head in one pass first: parts are only looked at one by one after a hit. The body is
    # searched apart, so its UTF-16/32 reading keeps the alignment it has on its own.
    head = [path, query, *(part for item in headers.items() for part in item)]
    if not carries(wire_bytes("\n".join(head)), guards):
        return "body" if carries(body, guards) else None
    if carries(wire_bytes(path), guards):
        return "path"
    if carries(wire_bytes(query), guards):
        return "query"
    for name, value in headers.items():
        if carries(wire_bytes(name), guards):
            return "header name"
        if carries(wire_bytes(value), guards):
            return f"header {name}"
    return "body" if carries(body, guards) else None


async def find_secret_async(
    guards: tuple[Redactor, ...],
    *,
    path: str,
    query: str,
    headers: CIMultiDict[str],
    body: bytes,
) -> str | None:
    """`find_secret`, in a worker thread when the body is larger than `THRESHOLD`."""
    if len(body) <= THRESHOLD:
        return find_secret(guards, path=path, query=query, headers=headers, body=body)
    return await offload(
        lambda b: find_secret(guards, path=path, query=query, headers=headers, body=b), body
    )


def scrub_text(text: str, guards: tuple[Redactor, ...]) -> str:
    """`text` (a field to be recorded) with every guarded value redacted: in place where that
    is possible, otherwise the whole text is replaced by the marker."""
    for guard in guards:
        text = guard.redact_text(text)[0]
    return text
