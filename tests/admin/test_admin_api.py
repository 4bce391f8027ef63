"""The admin socket against a whole Turret: audiences kept apart, revoke, seal, killswitch,
each taking effect on the next request and surviving reload and restart."""

from __future__ import annotations

import asyncio
import os
import stat
import time
from pathlib import Path

import pytest

from tests.admin.conftest import Served, eventually, write_served
from tests.conftest import Upstream
from tests.gateway import Canaries
from turret.state import NewToken

USER = "/v1/proxy/gitea/api/v1/user"
ADMIN_PATHS = [
    ("GET", "/v1/admin/status"),
    ("GET", "/v1/admin/agents"),
    ("POST", "/v1/admin/seal"),
    ("POST", "/v1/admin/killswitch"),
    ("POST", "/v1/admin/agents/opencode/revoke"),
    ("GET", "/metrics"),
]


def derived(token_id: str, digit: str, agent: str, now: float) -> NewToken:
    """A token derived from `agent`'s, valid for ten minutes (its digest is made up)."""
    return NewToken(token_id, digit * 64, agent, None, "{}", now, now + 600, None, False)


async def test_admin_socket_is_owner_only_and_answers_status(served: Served) -> None:
    mode = os.stat(served.admin_socket)  # noqa: PTH116 - one quick stat
    assert stat.S_ISSOCK(mode.st_mode) and stat.S_IMODE(mode.st_mode) == 0o600
    assert mode.st_uid == os.getuid()
    status, doc = await served.admin("GET", "/v1/admin/status")
    assert status == 200
    assert doc["sealed"] is None and doc["state_store"] is True
    assert doc["agents"] == {"count": 2, "revoked": []}
    assert doc["services"] == ["apikey", "basic", "gitea", "q"]
    assert len(doc["config_digest"]) == 16 and doc["audit_sink"] == "file"


@pytest.mark.parametrize(("method", "path"), ADMIN_PATHS)
@pytest.mark.parametrize("tcp", [False, True], ids=["unix", "tcp"])
async def test_agents_listeners_never_serve_admin_endpoints(
    served: Served, method: str, path: str, *, tcp: bool
) -> None:
    status, doc = await served.agent(path, method=method, tcp=tcp)
    assert status in {404, 405}, doc
    assert (await served.admin("GET", "/v1/admin/status"))[1]["sealed"] is None
    assert (await served.admin("GET", "/v1/admin/status"))[1]["agents"]["revoked"] == []


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", USER), ("GET", "/v1/whoami"), ("GET", "/v1/capabilities"), ("POST", "/v1/explain")],
)
async def test_admin_socket_never_serves_agent_endpoints(
    served: Served, method: str, path: str
) -> None:
    status, doc = await served.admin(method, path)
    assert status in {404, 405}
    assert doc["ok"] is False and doc["error"]["code"] in {"not_found", "method_not_allowed"}
    assert served.creds.tokens[0] not in str(doc)


async def test_revoke_refuses_the_agent_from_the_next_request_and_survives_restart(
    served: Served,
) -> None:
    assert (await served.agent(USER))[0] == 200
    status, doc = await served.admin(
        "POST", "/v1/admin/agents/opencode/revoke", {"reason": "prompt injection"}
    )
    assert status == 200 and doc["revoked"]["by"] == f"uid:{os.getuid()}"
    status, doc = await served.agent(USER)
    assert status == 401 and doc["error"]["code"] == "revoked"
    assert (await served.agent(USER, token=served.other_token))[0] == 200
    assert served.gateway is not None and await served.gateway.reload()
    assert (await served.agent(USER))[0] == 401
    await served.restart()
    status, doc = await served.agent(USER)
    assert status == 401 and doc["error"]["code"] == "revoked"
    status, doc = await served.admin("GET", "/v1/admin/status")
    assert doc["agents"]["revoked"] == ["opencode"]
    assert (await served.admin("POST", "/v1/admin/agents/opencode/unrevoke"))[0] == 200
    assert (await served.agent(USER))[0] == 200
    actions = [r for r in served.audit() if r["TURRET_EVENT"] == "admin_action"]
    assert [r["TURRET_ACTION"] for r in actions] == ["revoke opencode", "unrevoke opencode"]
    assert {r["TURRET_OPERATOR_UID"] for r in actions} == {str(os.getuid())}
    refused = [r for r in served.audit() if r.get("TURRET_REASON") == "agent opencode is revoked"]
    assert len(refused) == 3 and all(r["TURRET_DECISION"] == "deny" for r in refused)


async def test_revoke_also_revokes_the_agents_derived_tokens(served: Served) -> None:
    assert served.gateway is not None and served.gateway.state is not None
    tokens = served.gateway.state.tokens
    now = time.time()
    mine = tokens.insert(derived("t1", "a", "opencode", now))
    theirs = tokens.insert(derived("t2", "b", "other", now))
    assert (await served.admin("GET", "/v1/admin/status"))[1]["derived_tokens_in_force"] == 2
    status, doc = await served.admin("POST", "/v1/admin/agents/opencode/revoke")
    assert status == 200 and doc["derived_tokens_revoked"] == 1
    assert doc["revoked_token_ids"] == [mine.id]
    assert revoked_at(served, mine.id) is not None
    records = [r for r in served.audit() if r.get("TURRET_EVENT") == "token_revoked"]
    assert [(r["TURRET_TOKEN_ID"], r["TURRET_AGENT"]) for r in records] == [(mine.id, "opencode")]
    assert records[0]["TURRET_REVOKED_BY"].startswith("revoke opencode (uid:")
    assert revoked_at(served, theirs.id) is None
    # Unrevoking the agent does not bring its derived tokens back.
    await served.admin("POST", "/v1/admin/agents/opencode/unrevoke")
    assert revoked_at(served, mine.id) is not None


def revoked_at(served: Served, token_id: str) -> float | None:
    assert served.gateway is not None and served.gateway.state is not None
    token = served.gateway.state.tokens.get(token_id)
    assert token is not None
    return token.revoked_at


@pytest.mark.parametrize(
    ("path", "status", "code"),
    [
        ("/v1/admin/agents/nobody/revoke", 404, "not_found"),  # not in the config
        ("/v1/admin/agents/opencode/unrevoke", 404, "not_found"),  # not revoked
        ("/v1/admin/agents/Bad%20Name/revoke", 400, "bad_request"),
        ("/v1/admin/unseal", 404, "not_found"),  # not sealed
    ],
)
async def test_admin_refusals_have_the_one_error_shape(
    served: Served, path: str, status: int, code: str
) -> None:
    got, doc = await served.admin("POST", path)
    assert got == status and doc["ok"] is False
    assert doc["error"]["code"] == code and doc["error"]["message"]
    assert len(doc["error"]["request_id"]) == 16


async def test_admin_refuses_a_body_that_is_not_a_json_object(served: Served) -> None:
    got, doc = await served.admin("POST", "/v1/admin/seal", ["not", "an", "object"])
    assert got == 400 and doc["error"]["code"] == "bad_request"
    assert (await served.admin("GET", "/v1/admin/status"))[1]["sealed"] is None


@pytest.mark.parametrize("command", ["seal", "killswitch"])
async def test_sealed_answers_every_agent_request_on_every_listener(
    served: Served, command: str
) -> None:
    status, doc = await served.admin("POST", f"/v1/admin/{command}", {"reason": "incident 7"})
    assert status == 200 and doc["sealed"]["reason"] == "incident 7"
    for tcp in (False, True):
        for path, token in [(USER, None), ("/v1/whoami", None), (USER, ""), ("/nothing", None)]:
            for other in (False, True):
                got, body = await served.agent(
                    path, token=served.other_token if other else token, tcp=tcp
                )
                assert got == 503 and body["error"]["code"] == "sealed", (path, tcp, body)
    await served.restart()
    assert (await served.agent(USER, tcp=True))[0] == 503
    status, doc = await served.admin("GET", "/v1/admin/status")
    assert doc["sealed"]["by"] == f"uid:{os.getuid()}"
    assert (await served.admin("POST", "/v1/admin/unseal"))[0] == 200
    assert (await served.agent(USER))[0] == 200
    assert (await served.agent(USER, tcp=True))[0] == 200


async def test_killswitch_revokes_every_derived_token(served: Served) -> None:
    assert served.gateway is not None and served.gateway.state is not None
    tokens = served.gateway.state.tokens
    now = time.time()
    for i, agent in enumerate(["opencode", "other"]):
        tokens.insert(derived(f"t{i}", f"{i}", agent, now))
    status, doc = await served.admin("POST", "/v1/admin/killswitch")
    assert status == 200 and doc["derived_tokens_revoked"] == 2
    assert tokens.in_force(time.time()) == 0
    records = [r for r in served.audit() if r.get("TURRET_EVENT") == "token_revoked"]
    assert sorted(r["TURRET_TOKEN_ID"] for r in records) == sorted(doc["revoked_token_ids"])
    assert all(r["TURRET_REVOKED_BY"].startswith("killswitch (uid:") for r in records)


async def test_revoke_lets_an_in_flight_request_finish_and_refuses_the_next(
    served: Served, upstream: Upstream
) -> None:
    in_flight = asyncio.create_task(served.agent("/v1/proxy/gitea/hang"))
    await eventually(lambda: any(r.raw_path == "/hang" for r in upstream.received))
    assert (await served.admin("POST", "/v1/admin/agents/opencode/revoke"))[0] == 200
    refused = await served.agent(USER)
    upstream.release.set()
    assert (await in_flight)[0] == 200
    assert refused[0] == 401 and refused[1]["error"]["code"] == "revoked"


async def test_seal_lets_an_in_flight_request_finish_and_refuses_the_next(
    served: Served, upstream: Upstream
) -> None:
    in_flight = asyncio.create_task(served.agent("/v1/proxy/gitea/hang", tcp=True))
    await eventually(lambda: any(r.raw_path == "/hang" for r in upstream.received))
    assert (await served.admin("POST", "/v1/admin/seal"))[0] == 200
    refused = await served.agent(USER)
    upstream.release.set()
    assert (await in_flight)[0] == 200
    assert refused[0] == 503


async def test_revoke_takes_effect_within_the_next_request(served: Served) -> None:
    """The figure for the README: from `revoke` sent to the first refused request."""
    assert (await served.agent(USER))[0] == 200
    started = time.perf_counter()
    await served.admin("POST", "/v1/admin/agents/opencode/revoke")
    status, _ = await served.agent(USER)
    elapsed = time.perf_counter() - started
    assert status == 401
    assert elapsed < 2.0
    print(f"revoke to first refused request: {elapsed * 1000:.1f} ms")  # noqa: T201


async def test_agents_lists_grants_revocation_last_seen_and_requests(served: Served) -> None:
    await served.agent(USER)
    await served.agent("/v1/proxy/gitea/api/v1/admin", method="DELETE")
    await served.admin("POST", "/v1/admin/agents/other/revoke", {"reason": "rotated out"})
    status, doc = await served.admin("GET", "/v1/admin/agents")
    assert status == 200
    by_name = {a["agent"]: a for a in doc["agents"]}
    assert set(by_name) == {"opencode", "other"}
    opencode, other = by_name["opencode"], by_name["other"]
    assert opencode["requests"] == {"allow": 1, "deny": 1}
    assert opencode["last_seen"] is not None and opencode["revoked"] is None
    assert opencode["grants"]["proxy"]["gitea"] == ["DELETE", "GET", "POST", "PUT"]
    assert other["revoked"]["reason"] == "rotated out" and other["last_seen"] is None
    assert other["grants"]["proxy"] == {"gitea": ["GET"]}


async def test_admin_without_a_state_store_answers_503_saying_what_to_do(
    upstream: Upstream, leak_check: Canaries, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("STATE_DIRECTORY", raising=False)
    s = write_served(tmp_path, upstream, leak_check, state=False)
    await s.start()
    try:
        for path in ["/v1/admin/seal", "/v1/admin/killswitch", "/v1/admin/agents/other/revoke"]:
            status, doc = await s.admin("POST", path)
            assert status == 503 and "state directory" in doc["error"]["message"]
        status, doc = await s.admin("GET", "/v1/admin/status")
        assert status == 200 and doc["state_store"] is False and doc["sealed"] is None
        assert (await s.agent(USER))[0] == 200
    finally:
        await s.stop()
