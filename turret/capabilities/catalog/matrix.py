"""Matrix client-server API (spec v1.x, `/_matrix/client/v3`), with an access token as bearer."""

from __future__ import annotations

from typing import TYPE_CHECKING

from turret.capabilities.catalog._build import capability, each, fields
from turret.model import Capability, Param, Template

if TYPE_CHECKING:
    from turret.model import Service

# A room ID. Room versions 1-11: "!opaque:server[:port]" (server a DNS name or an IPv6 literal);
# version 12 (Synapse's default since 1.14x): "!" and the create event's reference hash, 43
# url-safe base64 characters, with no server part. No "/" and no "#alias": the API needs the ID.
ROOM_ID = (
    r"![A-Za-z0-9_-]{43}"
    r"|![A-Za-z0-9._=~+-]{1,255}:([A-Za-z0-9.-]{1,255}|\[[0-9A-Fa-f:.]{2,45}\])(:[0-9]{1,5})?"
)
ROOM = Param(
    "room_id",
    "string",
    "Matrix room ID, like !abc123:example.org or (room version 12) "
    "!31hneApxJ_1o-63DmFrpeqnkFfWppnzWso1JvH3ogLM",
    pattern=ROOM_ID,
)
# Only message events, filtered by the server so `limit` counts messages, not state events.
MESSAGES_ONLY = '{"types":["m.room.message"]}'


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
                    "How many messages",
                    required=False,
                    default=20,
                    minimum=1,
                    maximum=100,
                ),
            ),
            request=Template(
                "GET",
                "/_matrix/client/v3/rooms/{room_id}/messages",
                query=(("dir", "b"), ("limit", "{limit}"), ("filter", MESSAGES_ONLY)),
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
                    # A redacted message keeps its type but loses its content: leave it out.
                    require=("content.msgtype", "content.body"),
                )
            ),
        ),
    ]
