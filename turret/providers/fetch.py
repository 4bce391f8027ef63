"""One call to a credential source (Vault, STS, Secrets Manager): bounded in time and size, and
every way it can fail turned into one `SourceFailed` whose reason names what failed, never a
value sent or received (a source's error text can quote what it was sent, so it is not kept).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import aiohttp
from yarl import URL

from turret.errors import AddressRefused
from turret.upstream import read_at_most

# A credential source's answers are small; anything larger is not one of them.
MAX_ANSWER_BYTES = 256 * 1024


class SourceFailed(Exception):
    """A credential source gave no usable answer. `reason` is safe to log and audit."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


async def call(
    session: aiohttp.ClientSession,
    method: str,
    url: URL,
    *,
    headers: Mapping[str, str],
    body: bytes | None = None,
    within: float,
    what: str,
) -> tuple[int, bytes]:
    """Send one request and read the whole answer: (status, body), or `SourceFailed`."""
    try:
        async with session.request(
            method,
            url,
            headers=dict(headers),
            data=body,
            allow_redirects=False,
            timeout=aiohttp.ClientTimeout(total=within),
        ) as resp:
            data = await read_at_most(resp.content, MAX_ANSWER_BYTES)
            if data is None:
                resp.close()
                raise SourceFailed(f"{what}: answer larger than {MAX_ANSWER_BYTES} bytes")
            return resp.status, data
    except TimeoutError:
        raise SourceFailed(f"{what}: no answer within {within:g} s") from None
    except aiohttp.ClientConnectorError as exc:
        if isinstance(exc.os_error, AddressRefused):
            raise SourceFailed(f"{what}: address policy refused: {exc.os_error}") from None
        raise SourceFailed(f"{what}: unreachable ({type(exc).__name__})") from None
    except (aiohttp.ClientError, OSError) as exc:
        raise SourceFailed(f"{what}: failed ({type(exc).__name__})") from None


def json_object(data: bytes, what: str) -> dict[str, Any]:
    """`data` as a JSON object, or `SourceFailed`."""
    try:
        value = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise SourceFailed(f"{what}: answer is not JSON") from None
    if not isinstance(value, dict):
        raise SourceFailed(f"{what}: answer is not a JSON object")
    return value


def text_field(obj: Mapping[str, Any], key: str, what: str) -> str:
    """A non-empty string field of `obj` without CR, LF or NUL, or `SourceFailed`."""
    value = obj.get(key)
    if not isinstance(value, str) or not value or any(c in value for c in "\r\n\0"):
        raise SourceFailed(f"{what}: {key!r} missing or not a usable string")
    return value


def int_field(obj: Mapping[str, Any], key: str, what: str) -> int:
    """A non-negative integer field of `obj` (not a bool), or `SourceFailed`."""
    value = obj.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise SourceFailed(f"{what}: {key!r} missing or not a non-negative integer")
    return value
