"""ntfy: publish as JSON to the server's root URL (docs.ntfy.sh "Publish as JSON")."""

from __future__ import annotations

from typing import TYPE_CHECKING

from turret.capabilities.catalog._build import capability, fields
from turret.model import Capability, Param, Template

if TYPE_CHECKING:
    from turret.model import Service

TOPIC = r"[-_A-Za-z0-9]{1,64}"


def capabilities(service: Service) -> list[Capability]:
    """publish(topic, message, title, priority)."""
    return [
        capability(
            service,
            "ntfy",
            "publish",
            description="Send a push notification to an ntfy topic.",
            params=(
                Param("topic", "string", "Topic name", pattern=TOPIC),
                Param("message", "string", "Notification text", max_length=4096),
                Param("title", "string", "Notification title", required=False, max_length=256),
                Param(
                    "priority",
                    "integer",
                    "1 (min) to 5 (max); 3 is default",
                    required=False,
                    minimum=1,
                    maximum=5,
                ),
            ),
            request=Template(
                "POST",
                "/",
                body_kind="json",
                body={
                    "topic": "{topic}",
                    "message": "{message}",
                    "title": "{title}",
                    "priority": "{priority}",
                },
            ),
            result=fields(id="id"),
        )
    ]
