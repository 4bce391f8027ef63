"""Home Assistant REST API (`/api/services/<domain>/<service>`), with a long-lived token as bearer.

Restrict the domains an agent may call with a grant constraint (`domain: {one_of: [light]}`).
The entity must belong to the domain called, so a generic domain such as `homeassistant` cannot
reach an entity of a domain the agent was not given.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from turret.capabilities.catalog._build import capability, each, fields
from turret.model import Capability, Param, Params, Template

if TYPE_CHECKING:
    from turret.model import Service

SLUG = r"[a-z0-9_]{1,64}"


def entity_in_domain(params: Params) -> tuple[str, str] | None:
    """The entity must be of the domain whose service is called."""
    entity, domain = params.get("entity_id"), params.get("domain")
    if isinstance(entity, str) and not entity.startswith(f"{domain}."):
        return "entity_id", "must be an entity of the domain called (domain.object_id)"
    return None


def capabilities(service: Service) -> list[Capability]:
    """call_service(domain, service, entity_id)."""
    return [
        capability(
            service,
            "homeassistant",
            "call_service",
            description="Call a Home Assistant service on one entity, e.g. light.turn_on.",
            params=(
                Param("domain", "string", "Service domain, e.g. light", pattern=SLUG),
                Param("service", "string", "Service, e.g. turn_on", pattern=SLUG),
                Param(
                    "entity_id", "string", "Entity, e.g. light.kitchen", pattern=f"{SLUG}\\.{SLUG}"
                ),
            ),
            request=Template(
                "POST",
                "/api/services/{domain}/{service}",
                body_kind="json",
                body={"entity_id": "{entity_id}"},
            ),
            result=fields(changed=each("", fields(entity_id="entity_id", state="state"))),
            check=entity_in_domain,
        )
    ]
