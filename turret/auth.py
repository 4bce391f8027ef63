"""Agent authentication by bearer token, looked up through its SHA-256 digest."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Mapping

from turret.model import Agent
from turret.secret import Secret

TOKEN_PREFIX = "turret_"  # noqa: S105 - a public prefix, not a secret
TOKEN_BYTES = 32
TOKEN_ALPHABET = "A-Za-z0-9_-"  # noqa: S105 - url-safe base64 as a regex class, not a secret
TOKEN_BODY_LENGTH = 43  # characters of base64 for TOKEN_BYTES bytes, unpadded


def token_sha256(token: str) -> str:
    """The hex digest that the config stores in place of a token."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token() -> str:
    """A new agent token with 256 bits of randomness; the prefix lets secret scanners spot it."""
    return TOKEN_PREFIX + secrets.token_urlsafe(TOKEN_BYTES)


def bearer_token(header: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, or None."""
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or len(token) > 512:
        return None
    try:
        # Header bytes that are not UTF-8 reach us as lone surrogates; no token is made of them,
        # and hashing them would raise.
        token.encode("utf-8")
    except UnicodeEncodeError:
        return None
    return token


class TokenIndex:
    """Finds the agent a token belongs to.

    The index is keyed by the token's SHA-256, so lookup time depends only on a digest the
    caller cannot steer towards a stored one; the final comparison is constant time anyway.
    """

    def __init__(self, agents: Mapping[str, Agent], credentials: Mapping[str, Secret]) -> None:
        self._by_digest: dict[str, tuple[str, Agent]] = {}
        for agent in agents.values():
            if agent.token_credential is not None:
                digest = token_sha256(credentials[agent.token_credential].reveal())
            else:
                digest = agent.token_sha256 or ""
            if digest in self._by_digest:
                other = self._by_digest[digest][1].name
                raise ValueError(f"agents {other!r} and {agent.name!r} have the same token")
            self._by_digest[digest] = (digest, agent)

    def agent_for(self, token: str) -> Agent | None:
        """The agent whose token this is, or None."""
        digest = token_sha256(token)
        stored, agent = self._by_digest.get(digest, ("", None))
        return agent if hmac.compare_digest(stored, digest) else None
