"""The config's `alerts:`: a notification when a credential cannot be minted, sent through a
configured capability as Turret itself (`turret.web.alerts`), at most once per provider per
`every` seconds.

    alerts:
      capability: ntfy.publish
      params: {topic: turret-alerts, message: "credential minting failing: {provider}"}
      every: 600

A parameter value may name `{provider}`, `{service}` and `{cause}` (a fixed phrase, never a
value). The capability and its parameter names are checked at load; the values, once filled,
are checked against its schema when an alert is sent.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from turret.config.checker import Checker
from turret.config.providers import placeholders
from turret.config.yamlload import join
from turret.model import JSON, Capability

ALERT_FIELDS = frozenset({"provider", "service", "cause"})


@dataclass(frozen=True)
class AlertSettings:
    """Where a mint failure is notified, and how often at most (per provider)."""

    capability: str
    params: Mapping[str, JSON] = field(default_factory=dict, hash=False)
    every: float = 600.0


def read_alerts(
    ck: Checker, value: Any, capabilities: Mapping[str, Capability]
) -> AlertSettings | None:
    """The `alerts:` section, or None when there is none."""
    if value is None:
        return None
    m = ck.mapping("alerts", value, {"capability"}, {"params", "every"})
    if m is None:
        return None
    name = ck.string("alerts.capability", m.get("capability"))
    capability = capabilities.get(name) if name else None
    if name and capability is None:
        ck.fail("alerts.capability", f"no capability {name!r}")
    params = m.get("params", {})
    if not isinstance(params, dict):
        ck.fail("alerts.params", "must be a mapping of parameter to value")
        params = {}
    for key, raw in params.items():
        where = join("alerts.params", key)
        if capability is not None and capability.param(key) is None:
            ck.fail(where, f"{capability.name} has no such parameter")
        if not isinstance(raw, str | int | float) or isinstance(raw, bool):
            continue
        for _, named in placeholders(raw, where):
            if named not in ALERT_FIELDS:
                ck.fail(where, f"{{{named}}} is not one of {{provider}}, {{service}}, {{cause}}")
    every = ck.number("alerts.every", m.get("every", 600), 1, 86400, integer=False)
    if capability is None or every is None:
        return None
    return AlertSettings(capability.name, params, float(every))
