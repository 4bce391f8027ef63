"""Turret's Matrix capabilities against a real Synapse (issue 10, section 7).

What the fakes assume, checked against Synapse: its default room version (12) has room ids with
no server part, both id forms work for sending and reading, reading returns message events
only, and `limit` counts messages because the server filters (state events newer than the
messages do not eat into it).
"""

from __future__ import annotations

import re
import secrets
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest

from tests.real.conftest import Build, RealGateway, matrix_service
from tests.real.peers import Synapse

pytestmark = pytest.mark.timeout(180)
V12_ROOM_ID = re.compile(r"![A-Za-z0-9_-]{43}")


async def matrix_gateway(gateways: Build, peer: Synapse) -> RealGateway:
    return await gateways(
        matrix_service("chat", peer.url), {"matrix-token": peer.token}, ["chat.*"]
    )


async def direct(peer: Synapse, method: str, path: str, body: Any = None) -> Any:
    """Ask Synapse itself (not through Turret), as the room's owner."""
    headers = {"Authorization": f"Bearer {peer.token}"}
    async with (
        aiohttp.ClientSession() as http,
        http.request(method, peer.url + path, json=body, headers=headers) as resp,
    ):
        assert resp.status == 200, await resp.text()
        return await resp.json()


def room_path(room: str) -> str:
    return f"/_matrix/client/v3/rooms/{quote(room, safe='')}"


async def messages(gateway: RealGateway, room: str, limit: int) -> list[dict[str, Any]]:
    resp = await gateway.call("chat.read_messages", {"room_id": room, "limit": limit})
    assert resp.status == 200, await resp.text()
    result: list[dict[str, Any]] = (await resp.json())["result"]["messages"]
    return result


async def send(gateway: RealGateway, room: str, body: str) -> None:
    resp = await gateway.call("chat.send_message", {"room_id": room, "body": body})
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["result"]["event_id"].startswith("$")


async def test_real_matrix_default_room_version_has_room_ids_without_a_server(
    matrix: Synapse,
) -> None:
    assert V12_ROOM_ID.fullmatch(matrix.room_v12)
    assert matrix.room_v10.endswith(":" + matrix.server_name)
    for room, version in ((matrix.room_v12, "12"), (matrix.room_v10, "10")):
        create = await direct(matrix, "GET", room_path(room) + "/state/m.room.create/")
        assert create["room_version"] == version


@pytest.mark.parametrize("version", ["12", "10"])
async def test_real_matrix_send_and_read_return_message_events_only(
    gateways: Build, matrix: Synapse, version: str
) -> None:
    room = matrix.room_v12 if version == "12" else matrix.room_v10
    gateway = await matrix_gateway(gateways, matrix)
    body = f"hello room v{version} {secrets.token_hex(4)}"
    await send(gateway, room, body)
    # Unfiltered, the room's history holds the state events its creation made.
    unfiltered = await direct(matrix, "GET", room_path(room) + "/messages?dir=b&limit=50")
    assert any("state_key" in event for event in unfiltered["chunk"])
    read = await messages(gateway, room, limit=50)
    assert 1 <= len(read) <= 50
    assert read[0]["body"] == body
    assert read[0]["sender"] == matrix.user
    for message in read:
        assert message["type"] == "m.room.message"
        assert message["msgtype"] == "m.text"
        assert isinstance(message["body"], str)


@pytest.mark.parametrize("version", ["12", "10"])
async def test_real_matrix_limit_counts_messages_not_newer_state_events(
    gateways: Build, matrix: Synapse, version: str
) -> None:
    room = matrix.room_v12 if version == "12" else matrix.room_v10
    gateway = await matrix_gateway(gateways, matrix)
    bodies = [f"m{i}-{secrets.token_hex(4)}" for i in range(3)]
    for body in bodies:
        await send(gateway, room, body)
    # Newer than the messages: state events a client-side filter would have to skip.
    for topic in ("topic one", "topic two", "topic three"):
        await direct(matrix, "PUT", room_path(room) + "/state/m.room.topic/", {"topic": topic})
    read = await messages(gateway, room, limit=2)
    assert [m["body"] for m in read] == [bodies[2], bodies[1]]
