"""Matrix client-server API (spec v1.x, `/_matrix/client/v3`), with an access token as bearer."""

from __future__ import annotations

from typing import TYPE_CHECKING

from turret.capabilities.catalog._build import capability, each, fields
from turret.capabilities.model import Capability, Param, Template

if TYPE_CHECKING:
    from turret.config import Service

# A room ID: "!opaque:server[:port]". No "/" and no "#alias": the API needs the ID itself.
ROOM_ID = r"![A-Za-z0-9._=~+-]{1,255}:[A-Za-z0-9.-]{1,255}(:[0-9]{1,5})?"
ROOM = Param("room_id", "string", "Matrix room ID, like !abc123:example.org", pattern=ROOM_ID)


def capabilities(service: Service) -> list[Capability]:
    """send_message(room_id, body) and read_messages(room_id, limit)."""
    return [
        capability(
            service,
            "matrix",
            "send_message",
            description="Send a plain-text message to a Matrix room.",
            params=(ROOM, Param("body", "string", "The message text", max_length=32000)),
            # The transaction id is fresh per call, so a retried call is a new message.
            request=Template(
                "PUT",
                "/_matrix/client/v3/rooms/{room_id}/send/m.room.message/{$txn}",
                body_kind="json",
                body={"msgtype": "m.text", "body": "{body}"},
            ),
            result=fields(event_id="event_id"),
        ),
        capability(
            service,
            "matrix",
            "read_messages",
            description="Read the most recent messages of a Matrix room, newest first.",
            params=(
                ROOM,
                Param(
                    "limit",
                    "integer",
                    "How many events",
                    required=False,
                    default=20,
                    minimum=1,
                    maximum=100,
                ),
            ),
            request=Template(
                "GET",
                "/_matrix/client/v3/rooms/{room_id}/messages",
                query=(("dir", "b"), ("limit", "{limit}")),
            ),
            result=fields(
                messages=each(
                    "chunk",
                    fields(
                        event_id="event_id",
                        sender="sender",
                        type="type",
                        msgtype="content.msgtype",
                        body="content.body",
                        ts="origin_server_ts",
                    ),
                    limit=100,
                )
            ),
        ),
    ]
