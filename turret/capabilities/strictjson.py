"""Strict JSON: one reading of a body, or a 400 that says what is wrong.

Python's `json` accepts things other parsers read differently: a duplicate key (first or last
wins?), NaN and Infinity (not JSON), and, through its pure-Python scanner, digits from other
scripts. A body with any of them is refused, so Turret checks exactly what it then acts on.
"""

from __future__ import annotations

import json
import re
from typing import Any

from turret.errors import BadRequest
from turret.model import JSON

MAX_BODY_BYTES = 64 * 1024
_MAX_NUMBER_CHARS = 32  # longer numbers are refused before Python parses them
_MAX_SHOWN_KEY = 64
_STRING_ESCAPE = re.compile(r'\\(?:u([0-9a-fA-F]{4})|(["\\/bfnrt]))')
_SIMPLE_ESCAPES = dict(zip('"\\/bfnrt', '"\\/\b\f\n\r\t', strict=True))


class _Refused(ValueError):
    pass


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _Refused(f"duplicate key {shown_key(key)}")
        out[key] = value
    return out


def _constant(name: str) -> None:
    raise _Refused(f"{name} is not a JSON number")


def _integer(text: str) -> int:
    if len(text) > _MAX_NUMBER_CHARS or not text.lstrip("-").isascii():
        raise _Refused("numbers must be ASCII digits, at most 32 characters")
    return int(text)


def _float(text: str) -> float:
    if len(text) > _MAX_NUMBER_CHARS or not text.isascii():
        raise _Refused("numbers must be ASCII digits, at most 32 characters")
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise _Refused("number out of range")
    return value


def shown_key(key: str) -> str:
    """A key as a message may quote it: printable ASCII, and whole or not at all. A key cut short
    could hold part of a secret, which the audit's scrubber (it knows whole values) would miss."""
    if len(key) > _MAX_SHOWN_KEY:
        return f"of {len(key)} characters"
    return repr(key.encode("ascii", "backslashreplace").decode())


def searchable(body: bytes) -> bytes:
    """`body`, and if it holds JSON string escapes, a copy with them decoded: what the secret
    guards search. An escape hides a value from the raw bytes (`\\u0074urret_...`) but not from
    the parsed body; this works on any bytes, so a body refused as JSON is searched too."""
    if b"\\" not in body:
        return body
    text = _STRING_ESCAPE.sub(_unescape, body.decode("utf-8", "replace"))
    # A character outside the BMP is escaped as a surrogate pair: join the pairs.
    text = text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
    return body + b"\n" + text.encode("utf-8")


def _unescape(m: re.Match[str]) -> str:
    return chr(int(m[1], 16)) if m[1] else _SIMPLE_ESCAPES[m[2]]


def parse_object(body: bytes) -> dict[str, JSON]:
    """The JSON object in `body`; `BadRequest` for anything but one strict JSON object."""
    if len(body) > MAX_BODY_BYTES:
        raise BadRequest(f"request body is larger than {MAX_BODY_BYTES} bytes")
    try:
        text = body.decode("utf-8")
        value = json.loads(
            text,
            object_pairs_hook=_pairs,
            parse_constant=_constant,
            parse_int=_integer,
            parse_float=_float,
        )
    except UnicodeDecodeError:
        raise BadRequest("request body is not valid UTF-8") from None
    except _Refused as exc:
        raise BadRequest(f"request body refused: {exc}") from None
    except (ValueError, RecursionError):
        raise BadRequest("request body is not valid JSON") from None
    if not isinstance(value, dict):
        raise BadRequest("request body must be a JSON object")
    return value
