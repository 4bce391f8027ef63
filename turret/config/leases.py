"""Reading the settings for derived tokens (leases): durations, `max_ttl`, `may_derive` and a
configured token's `expires`, for agents and groups alike."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from turret.config.checker import Checker
from turret.config.yamlload import join

_DURATION = re.compile(r"(?:[0-9]{1,7}[smhd]){1,4}")
_PART = re.compile(r"([0-9]+)([smhd])")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}
MAX_TTL_LIMIT = 366 * 86400.0  # no lease outlives a year, whatever the config says


def parse_duration(text: object) -> float | None:
    """Seconds of a duration such as `90s`, `15m`, `1h30m`, `7d`; None if it is not one (or
    is zero)."""
    if not isinstance(text, str) or not _DURATION.fullmatch(text):
        return None
    seconds = sum(int(n) * _UNIT[unit] for n, unit in _PART.findall(text))
    return float(seconds) if seconds > 0 else None


def parse_expiry(value: object) -> float | None:
    """Seconds since the epoch of a date (its start, 00:00 UTC) or an RFC 3339 time with an
    offset; None if it is neither."""
    if isinstance(value, dt.datetime):
        return value.timestamp() if value.tzinfo is not None else None
    if isinstance(value, dt.date):
        return dt.datetime(value.year, value.month, value.day, tzinfo=dt.UTC).timestamp()
    if not isinstance(value, str):
        return None
    try:
        if len(value) == 10:
            return parse_expiry(dt.date.fromisoformat(value))
        moment = dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    return parse_expiry(moment)


def read_derive_settings(
    ck: Checker, path: str, spec: dict[str, Any]
) -> tuple[float | None, bool | None]:
    """An agent's or group's `max_ttl` (seconds, or None when unset) and `may_derive`."""
    max_ttl = None
    if "max_ttl" in spec:
        max_ttl = parse_duration(spec["max_ttl"])
        if max_ttl is None or max_ttl > MAX_TTL_LIMIT:
            ck.fail(join(path, "max_ttl"), "must be a duration (15m, 24h, 7d), at most 366d")
            max_ttl = None
    may_derive = spec.get("may_derive")
    if may_derive is not None and not isinstance(may_derive, bool):
        ck.fail(join(path, "may_derive"), "must be true or false")
        may_derive = None
    return max_ttl, may_derive


def read_expires(ck: Checker, path: str, spec: dict[str, Any]) -> float | None:
    """A configured agent token's `expires`: a date or an RFC 3339 time with an offset."""
    if "expires" not in spec:
        return None
    moment = parse_expiry(spec["expires"])
    if moment is None:
        ck.fail(join(path, "expires"), "must be a date (2027-01-31) or an RFC 3339 time")
    return moment


DERIVE_KEYS = frozenset({"max_ttl", "may_derive"})
