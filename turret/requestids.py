"""Request ids: unpredictable, from the operating system's CSPRNG, drawn in batches.

A request id is shown to the agent and recorded with every audit record of its request. Drawn
from a seeded PRNG, the ids one agent sees would let it compute the ids of other agents'
requests (and guess which records are theirs); from `os.urandom` they say nothing. One
`getrandom()` call serves `BATCH_BYTES // ID_BYTES` requests.
"""

from __future__ import annotations

import secrets

ID_BYTES = 8
BATCH_BYTES = 4096


class RequestIds:
    """Hands out 64-bit random ids as 16 hex digits."""

    def __init__(self) -> None:
        self._batch = b""
        self._at = 0

    def next(self) -> str:
        """A fresh request id."""
        if self._at + ID_BYTES > len(self._batch):
            self._batch, self._at = secrets.token_bytes(BATCH_BYTES), 0
        start, self._at = self._at, self._at + ID_BYTES
        return self._batch[start : self._at].hex()
