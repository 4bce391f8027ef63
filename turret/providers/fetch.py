"""One call to a credential source (Vault, STS, Secrets Manager): bounded in time and size, and
every way it can fail turned into one `MintFailed` whose cause names what failed, never a
value sent or received (a source's error text can quote what it was sent, so it is not kept).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import aiohttp
from yarl import URL

from turret.errors import AddressRefused
from turret.providers.minting import MintFailed
from turret.upstream import read_at_most

# A credential source's answers are small; anything larger is not one of them.
MAX_ANSWER_BYTES = 256 * 1024


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
    """Send one request and read the whole answer: (status, body), or `MintFailed`."""
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
                raise MintFailed(f"{what}: answer larger than {MAX_ANSWER_BYTES} bytes")
            return resp.status, data
    except TimeoutError:
        raise MintFailed(f"{what}: no answer within {within:g} s") from None
    except aiohttp.ClientConnectorError as exc:
        if isinstance(exc.os_error, AddressRefused):
            raise MintFailed(f"{what}: address policy refused: {exc.os_error}") from None
        raise MintFailed(f"{what}: unreachable ({type(exc).__name__})") from None
    except (aiohttp.ClientError, OSError) as exc:
        raise MintFailed(f"{what}: failed ({type(exc).__name__})") from None


def json_object(data: bytes, what: str) -> dict[str, Any]:
    """`data` as a JSON object, or `MintFailed`."""
    try:
        value = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise MintFailed(f"{what}: answer is not JSON") from None
    if not isinstance(value, dict):
        raise MintFailed(f"{what}: answer is not a JSON object")
    return value


def text_field(obj: Mapping[str, Any], key: str, what: str) -> str:
    """A non-empty string field of `obj` without CR, LF or NUL, or `MintFailed`."""
    value = obj.get(key)
    if not isinstance(value, str) or not value or any(c in value for c in "\r\n\0"):
        raise MintFailed(f"{what}: {key!r} missing or not a usable string")
    return value


def int_field(obj: Mapping[str, Any], key: str, what: str) -> int:
    """A non-negative integer field of `obj` (not a bool), or `MintFailed`."""
    value = obj.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise MintFailed(f"{what}: {key!r} missing or not a non-negative integer")
    return value


def time_field(obj: Mapping[str, Any], key: str, what: str) -> float:
    """An RFC 3339 time field of `obj` (a `Z` suffix and nanoseconds allowed) with its time
    zone, as epoch seconds; or `MintFailed`."""
    text = text_field(obj, key, what)
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise MintFailed(f"{what}: {key} is not a timestamp") from None
    if when.tzinfo is None:
        raise MintFailed(f"{what}: {key} has no time zone")
    return when.timestamp()
