"""Reading the config's `heartbeat:` and `checkin:` sections (the dead-man switch)."""

from __future__ import annotations

from typing import Any

from turret.config.checker import Checker
from turret.config.leases import parse_duration
from turret.config.limits import read_address_policy
from turret.config.yamlload import join
from turret.heartbeat import ON_FAILURE, CheckinSettings, HeartbeatSettings
from turret.netpolicy import service_url

# key: (default, lowest, highest) in seconds
_HEARTBEAT_TIMES = {"interval": (60.0, 1.0, 86400.0), "timeout": (10.0, 0.1, 600.0)}
_CHECKIN_RANGE = (60.0, 366 * 86400.0)
MAX_MISSES = 1000


def read_deadman(
    ck: Checker, top: dict[str, Any]
) -> tuple[HeartbeatSettings | None, CheckinSettings | None]:
    """`heartbeat:` and `checkin:`, each None when absent."""
    heartbeat = _heartbeat(ck, top["heartbeat"]) if "heartbeat" in top else None
    checkin = _checkin(ck, top["checkin"]) if "checkin" in top else None
    return heartbeat, checkin


def seconds(ck: Checker, path: str, value: Any, lo: float, hi: float) -> float | None:
    """A time as a number of seconds or a duration (`90s`, `15m`, `24h`, `7d`), in [lo, hi]."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        number: float | None = float(value)
    else:
        number = parse_duration(value)
    if number is None or not lo <= number <= hi:
        ck.fail(path, f"must be seconds or a duration (90s, 15m, 24h, 7d), {lo:g} s to {hi:g} s")
        return None
    return number


def _on_failure(ck: Checker, path: str, spec: dict[str, Any]) -> str | None:
    value = spec.get("on_failure", ON_FAILURE[0])
    if value not in ON_FAILURE:
        ck.fail(join(path, "on_failure"), f"must be one of {', '.join(ON_FAILURE)}")
        return None
    return str(value)


def _heartbeat(ck: Checker, value: Any) -> HeartbeatSettings | None:
    keys = {*_HEARTBEAT_TIMES, "misses", "on_failure", "allow_networks"}
    spec = ck.mapping("heartbeat", value, {"url"}, keys)
    if spec is None:
        return None
    url = None
    text = ck.string("heartbeat.url", spec["url"]) if "url" in spec else None
    if text is not None:
        try:
            url = service_url(text)
        except ValueError as exc:
            ck.fail("heartbeat.url", str(exc))
    times = {
        key: seconds(ck, join("heartbeat", key), spec.get(key, default), lo, hi)
        for key, (default, lo, hi) in _HEARTBEAT_TIMES.items()
    }
    interval, timeout = times["interval"], times["timeout"]
    if interval is not None and timeout is not None and timeout > interval:
        ck.fail("heartbeat.timeout", "must not be longer than heartbeat.interval")
    misses = ck.number("heartbeat.misses", spec.get("misses", 3), 1, MAX_MISSES, integer=True)
    on_failure = _on_failure(ck, "heartbeat", spec)
    policy = read_address_policy(
        ck, "heartbeat.allow_networks", spec.get("allow_networks", [])
    )
    if url is None or interval is None or timeout is None or misses is None or not on_failure:
        return None
    return HeartbeatSettings(url, interval, timeout, int(misses), on_failure, policy)


def _checkin(ck: Checker, value: Any) -> CheckinSettings | None:
    keys = {"max_interval", "on_failure"}
    spec = ck.mapping("checkin", {} if value is None else value, set(), keys)
    if spec is None:
        return None
    lo, hi = _CHECKIN_RANGE
    max_interval = seconds(ck, "checkin.max_interval", spec.get("max_interval", "24h"), lo, hi)
    on_failure = _on_failure(ck, "checkin", spec)
    if max_interval is None or on_failure is None:
        return None
    return CheckinSettings(max_interval, on_failure)
