"""The values of key age and health checks: each credential's rotation policy (`credentials:`)
and each service's health check (`check:`). Plain frozen values, no behaviour, no imports from
Turret, so the model and the config reader can both name them."""

from __future__ import annotations

from dataclasses import dataclass

DAY = 86400.0
DEFAULT_WARN_BEFORE = 14 * DAY


@dataclass(frozen=True)
class CredentialPolicy:
    """How old one credential may grow: `max_age` (seconds, None: no limit), warnings from
    `warn_before` ahead, who owns it and how it is rotated (free text for the operator), and
    whether an overdue value is refused (`enforce_max_age`) or only warned about."""

    max_age: float | None = None
    warn_before: float = DEFAULT_WARN_BEFORE
    owner: str | None = None
    rotate_hint: str | None = None
    enforce_max_age: bool = False


@dataclass(frozen=True)
class HealthCheck:
    """One request that proves a service's credential works: `method path`, answered with
    `expect_status`."""

    method: str
    path: str
    expect_status: int = 200


# The check each catalog kind gets unless its service says otherwise. ntfy has none: it has no
# endpoint that needs a token and changes nothing. qBittorrent's needs the WebUI login, so it
# proves the login works (Turret logs in before sending it).
KIND_CHECKS: dict[str, HealthCheck | None] = {
    "matrix": HealthCheck("GET", "/_matrix/client/v3/account/whoami"),
    "gitea": HealthCheck("GET", "/api/v1/user"),
    "qbittorrent": HealthCheck("GET", "/api/v2/app/version"),
    "proxmox": HealthCheck("GET", "/api2/json/version"),
    "homeassistant": HealthCheck("GET", "/api/"),
    "ntfy": None,
}
