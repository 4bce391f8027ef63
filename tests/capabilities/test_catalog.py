"""The built-in catalog end to end: Turret in front of fakes that follow each real API."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.capabilities.conftest import CapGateway, make_capability_gateway
from tests.gateway import Canaries
from turret.authkinds import BearerAuth
from turret.capabilities.catalog import KINDS, catalog_capabilities
from turret.capabilities.template import template_problems
from turret.model import Service

MAGNET = "magnet:?xt=urn:btih:" + "a" * 40 + "&dn=debian-12.iso"


async def test_matrix_send_message_puts_event_and_returns_event_id(
    capgw: CapGateway,
) -> None:
    resp = await capgw.call("chat.send_message", {"room_id": "!ops:example.org", "body": "hi"})
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert body["ok"] is True and set(body["result"]) == {"event_id"}
    assert body["result"]["event_id"].startswith("$")
    (seen,) = capgw.fakes.requests("matrix")
    assert seen.method == "PUT"
    prefix = "/_matrix/client/v3/rooms/!ops:example.org/send/m.room.message/"
    assert seen.raw_path.startswith(prefix)
    assert len(seen.raw_path.removeprefix(prefix)) == 32  # a fresh transaction id
    assert json.loads(seen.body) == {"msgtype": "m.text", "body": "hi"}
    assert seen.headers["Authorization"] == f"Bearer {capgw.canaries['matrix-token']}"


async def test_matrix_transaction_ids_differ_per_call(capgw: CapGateway) -> None:
    for _ in range(2):
        resp = await capgw.call("chat.send_message", {"room_id": "!ops:example.org", "body": "x"})
        assert resp.status == 200
    first, second = capgw.fakes.requests("matrix")
    assert first.raw_path != second.raw_path


async def test_matrix_read_messages_projects_and_redacts(capgw: CapGateway) -> None:
    await capgw.call("chat.send_message", {"room_id": "!ops:example.org", "body": "one"})
    await capgw.call("chat.send_message", {"room_id": "!ops:example.org", "body": "two"})
    resp = await capgw.call("chat.read_messages", {"room_id": "!ops:example.org", "limit": 5})
    assert resp.status == 200
    messages = (await resp.json())["result"]["messages"]
    assert [m["body"] for m in messages] == ["two", "one"]
    assert set(messages[0]) == {"event_id", "sender", "type", "msgtype", "body", "ts"}
    # The fake puts the access token in "unsigned"; the projection never returns it.
    assert "unsigned" not in await resp.text()
    filter_ = "%7B%22types%22%3A%5B%22m.room.message%22%5D%7D"
    assert capgw.fakes.requests("matrix")[-1].raw_path.endswith(
        f"/messages?dir=b&limit=5&filter={filter_}"
    )


async def test_matrix_upstream_refusal_is_upstream_status(capgw: CapGateway) -> None:
    capgw.fakes.messages.clear()  # Turret's user is in no room now
    resp = await capgw.call("chat.send_message", {"room_id": "!ops:example.org", "body": "x"})
    assert resp.status == 502
    error = (await resp.json())["error"]
    assert error["code"] == "upstream_status" and "HTTP 403" in error["message"]


@pytest.mark.parametrize("cookie_name", ["SID", "QBT_SID_8080"])
async def test_qbittorrent_logs_in_once_and_keeps_the_cookie(
    tmp_path: Path, leak_check: Canaries, cookie_name: str
) -> None:
    gw, servers = await make_capability_gateway(tmp_path, creds=leak_check, sid_cookie=cookie_name)
    try:
        for _ in range(3):
            resp = await gw.call(
                "qbit.list_torrents", {"category": "linux-isos"}, agent="ops/alice"
            )
            assert resp.status == 200, await resp.text()
        assert gw.fakes.logins == 1
        (login, *calls) = gw.fakes.requests("qbittorrent")
        assert login.raw_path == "/api/v2/auth/login"
        assert login.headers["Content-Type"] == "application/x-www-form-urlencoded"
        assert "Referer" in login.headers
        sid = gw.fakes.issued[0]
        assert all(c.headers["Cookie"] == f"{cookie_name}={sid}" for c in calls)
        assert calls[0].raw_path == "/api/v2/torrents/info?category=linux-isos"
    finally:
        await gw.client.close()
        for server in servers:
            await server.close()


async def test_qbittorrent_add_torrent_then_list(capgw: CapGateway) -> None:
    resp = await capgw.call(
        "qbit.add_torrent", {"magnet": MAGNET, "category": "linux-isos"}, agent="ops/alice"
    )
    assert resp.status == 200, await resp.text()
    assert await resp.json() == {"ok": True, "result": {}}
    add = capgw.fakes.requests("qbittorrent")[-1]
    assert add.headers["Content-Type"].startswith("multipart/form-data; boundary=")
    listed = await capgw.call("qbit.list_torrents", {"category": "linux-isos"}, agent="ops/alice")
    (torrent,) = (await listed.json())["result"]["torrents"]
    assert torrent["category"] == "linux-isos" and torrent["state"] == "downloading"
    assert "magnet_uri" not in torrent and "save_path" not in torrent


async def test_qbittorrent_logs_in_again_when_the_session_expires(capgw: CapGateway) -> None:
    params = {"category": "linux-isos"}
    assert (await capgw.call("qbit.list_torrents", params, agent="ops/alice")).status == 200
    capgw.fakes.sids.clear()  # qBittorrent forgot the session: it answers 403
    resp = await capgw.call("qbit.list_torrents", params, agent="ops/alice")
    assert resp.status == 200
    assert capgw.fakes.logins == 2
    paths = [s.raw_path.partition("?")[0] for s in capgw.fakes.requests("qbittorrent")]
    assert paths == [
        "/api/v2/auth/login",
        "/api/v2/torrents/info",
        "/api/v2/torrents/info",  # 403
        "/api/v2/auth/login",
        "/api/v2/torrents/info",
    ]


async def test_qbittorrent_refused_login_is_502_without_details(capgw: CapGateway) -> None:
    capgw.fakes.tokens["qbittorrent"] = "another password"
    resp = await capgw.call("qbit.list_torrents", {"category": "linux-isos"}, agent="ops/alice")
    assert resp.status == 502
    error = (await resp.json())["error"]
    assert error == {**error, "code": "upstream_error"}
    assert "login" in error["message"]
    assert capgw.audit()[-1]["TURRET_REASON"] == "login refused: wrong credentials"


@pytest.mark.parametrize(
    ("capability", "params", "path"),
    [
        ("pve.pct_status", {"ctid": 101}, "/api2/json/nodes/pve1/lxc/101/status/current"),
        ("pve.qemu_status", {"vmid": 200}, "/api2/json/nodes/pve1/qemu/200/status/current"),
        (
            "pve.pct_status",
            {"ctid": 300, "node": "pve2"},
            "/api2/json/nodes/pve2/lxc/300/status/current",
        ),
    ],
)
async def test_proxmox_status_uses_token_header_and_default_node(
    capgw: CapGateway, capability: str, params: dict[str, object], path: str
) -> None:
    resp = await capgw.call(capability, params)
    assert resp.status == 200, await resp.text()
    result = (await resp.json())["result"]
    assert result["status"] == "running" and set(result) == {"status", "name", "vmid", "uptime"}
    (seen,) = capgw.fakes.requests("proxmox")
    assert seen.raw_path == path
    assert seen.headers["Authorization"] == f"PVEAPIToken={capgw.canaries['pve-token']}"


async def test_proxmox_unknown_guest_is_upstream_status(capgw: CapGateway) -> None:
    resp = await capgw.call("pve.pct_status", {"ctid": 999})
    assert resp.status == 502
    assert "HTTP 500" in (await resp.json())["error"]["message"]


async def test_gitea_create_issue_and_user_defined_close(capgw: CapGateway) -> None:
    resp = await capgw.call(
        "git.create_issue", {"repo": "me/notes", "title": "Disk full", "body": "on /srv"}
    )
    assert resp.status == 200, await resp.text()
    result = (await resp.json())["result"]
    assert set(result) == {"number", "html_url"}
    seen = capgw.fakes.requests("gitea")[-1]
    assert seen.raw_path == "/api/v1/repos/me/notes/issues"
    assert json.loads(seen.body) == {"title": "Disk full", "body": "on /srv"}
    closed = await capgw.call("git.close_issue", {"repo": "notes", "index": result["number"]})
    assert await closed.json() == {
        "ok": True,
        "result": {"number": result["number"], "state": "closed"},
    }
    seen = capgw.fakes.requests("gitea")[-1]
    assert (seen.method, seen.raw_path) == (
        "PATCH",
        f"/api/v1/repos/me/notes/issues/{result['number']}",
    )
    assert json.loads(seen.body) == {"state": "closed"}


async def test_gitea_comment_follows_the_api(capgw: CapGateway) -> None:
    resp = await capgw.call("git.comment", {"repo": "me/infra", "index": 3, "body": "done"})
    assert resp.status == 200, await resp.text()
    result = (await resp.json())["result"]
    assert set(result) == {"id", "html_url"} and result["html_url"].endswith(f"-{result['id']}")
    (seen,) = capgw.fakes.requests("gitea")
    assert (seen.method, seen.raw_path) == ("POST", "/api/v1/repos/me/infra/issues/3/comments")
    assert json.loads(seen.body) == {"body": "done"}


async def test_ntfy_publish_as_json(capgw: CapGateway) -> None:
    resp = await capgw.call(
        "push.publish", {"topic": "alerts", "message": "backup done", "priority": 4}
    )
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["result"] == {"id": "msg1"}
    (seen,) = capgw.fakes.requests("ntfy")
    assert seen.raw_path == "/"
    # Optional parameters not given are left out, not sent as null.
    assert json.loads(seen.body) == {"topic": "alerts", "message": "backup done", "priority": 4}


async def test_homeassistant_call_service(capgw: CapGateway) -> None:
    params = {"domain": "light", "service": "turn_on", "entity_id": "light.kitchen"}
    resp = await capgw.call("home.call_service", params)
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["result"] == {
        "changed": [{"entity_id": "light.kitchen", "state": "on"}]
    }
    (seen,) = capgw.fakes.requests("homeassistant")
    assert seen.raw_path == "/api/services/light/turn_on"
    assert json.loads(seen.body) == {"entity_id": "light.kitchen"}


@pytest.mark.parametrize(
    ("params", "status"),
    [
        ({"domain": "lock", "service": "unlock", "entity_id": "lock.front"}, 403),
        ({"domain": "homeassistant", "service": "turn_on", "entity_id": "lock.front"}, 422),
        ({"domain": "light", "service": "turn_on", "entity_id": "lock.front"}, 422),
    ],
)
async def test_homeassistant_domain_allowlist(
    capgw: CapGateway, params: dict[str, str], status: int
) -> None:
    resp = await capgw.call("home.call_service", params)
    assert resp.status == status
    assert capgw.fakes.requests("homeassistant") == []


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_catalog_templates_pass_the_checks_user_templates_get(kind: str) -> None:
    """Calls trust a template's fixed path parts: the catalog's must pass the load-time checks."""
    service = Service("svc", "https://svc.example", BearerAuth("t"), kind=kind, node="pve1")
    capabilities = catalog_capabilities(service)
    assert capabilities
    for capability in capabilities:
        assert template_problems(capability) == [], capability.name
