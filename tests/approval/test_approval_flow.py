"""Human approval end to end: a held call is answered 202 and sent nowhere; the operator
approves or denies on the admin socket; the agent's read performs an approved call once."""

from __future__ import annotations

import asyncio

import pytest

from tests.admin.conftest import eventually
from tests.approval.conftest import CLOSE, Desk


async def held(desk: Desk, name: str = CLOSE, params: object = None) -> str:
    """Ask for a call that needs approval; its approval id."""
    status, doc = await desk.call(name, params)
    assert status == 202, doc
    assert doc["ok"] is True and set(doc["pending"]) == {"approval_id", "expires_at"}
    return str(doc["pending"]["approval_id"])


async def test_approval_call_is_held_and_nothing_goes_upstream(desk: Desk) -> None:
    approval_id = await held(desk)
    assert approval_id.startswith("apr_") and len(approval_id) == 28
    assert desk.upstream("gitea") == 0
    status, doc = await desk.read(approval_id)
    assert status == 200 and doc["approval"]["status"] == "pending"
    [requested] = desk.audit("approval_requested")
    assert requested["TURRET_APPROVAL_ID"] == approval_id
    assert requested["TURRET_AGENT"] == "ops/alice" and requested["TURRET_CAPABILITY"] == CLOSE
    assert len(requested["TURRET_PARAMS_HMAC"]) == 64
    [decision] = [r for r in desk.audit("decision") if r.get("TURRET_STATUS") == "202"]
    assert decision["TURRET_DECISION"] == "approval"


async def test_approval_ids_are_unique_per_call(desk: Desk) -> None:
    ids = {await held(desk) for _ in range(5)}
    assert len(ids) == 5


async def test_approval_operator_is_notified_without_the_params(desk: Desk) -> None:
    approval_id = await held(desk, "push.note", {"text": "prod: restart the database"})
    [sent] = desk.fakes.requests("ntfy")
    body = sent.body.decode()
    assert approval_id in body and "ops/alice" in body and "push.note" in body
    assert '"topic": "ops"' in body or '"topic":"ops"' in body
    assert "restart the database" not in body


async def test_approval_when_holds_only_matching_calls(desk: Desk) -> None:
    status, doc = await desk.call("push.note", {"text": "staging: all good"})
    # Sent at once (the fake has no /notes: its 404 is the service's answer), not held.
    assert status == 502 and doc["error"]["code"] == "upstream_status"
    assert not desk.audit("approval_requested")
    await held(desk, "push.note", {"text": "prod: all good"})
    assert [r.raw_path for r in desk.fakes.requests("ntfy")] == ["/"]  # the operator told


async def test_approval_approved_call_is_performed_once_on_read(desk: Desk) -> None:
    approval_id = await held(desk)
    status, doc = await desk.approve(approval_id)
    assert status == 200 and doc["approval"]["status"] == "approved"
    assert desk.upstream("gitea") == 0  # approving alone sends nothing
    status, doc = await desk.read(approval_id)
    assert status == 200, doc
    assert doc["approval"]["status"] == "done" and doc["result"] == {"number": 7, "state": "closed"}
    [sent] = desk.fakes.requests("gitea")
    assert sent.method == "PATCH" and sent.raw_path == "/api/v1/repos/me/infra/issues/7"
    again = await desk.read(approval_id)
    assert again == (200, doc) or again[1]["result"] == doc["result"]
    assert desk.upstream("gitea") == 1
    [granted] = desk.audit("approval_granted")
    assert granted["TURRET_APPROVAL_ID"] == approval_id and granted["TURRET_OPERATOR_UID"]
    [executed] = desk.audit("approval_executed")
    assert executed["TURRET_APPROVAL_ID"] == approval_id and executed["TURRET_STATUS"] == "200"


async def test_approval_long_poll_returns_when_approved(desk: Desk) -> None:
    approval_id = await held(desk)
    reader = asyncio.create_task(desk.read(approval_id, wait=30))
    await eventually(lambda: desk.in_flight() == 1)  # the read is waiting
    assert (await desk.approve(approval_id))[0] == 200
    status, doc = await asyncio.wait_for(reader, 10)
    assert status == 200 and doc["approval"]["status"] == "done"
    assert desk.upstream("gitea") == 1


async def test_approval_long_poll_answers_pending_after_the_wait(desk: Desk) -> None:
    approval_id = await held(desk)
    started = asyncio.get_running_loop().time()
    status, doc = await desk.read(approval_id, wait=1)
    assert status == 200 and doc["approval"]["status"] == "pending"
    assert asyncio.get_running_loop().time() - started >= 0.9


async def test_approval_denied_call_is_never_performed(desk: Desk) -> None:
    approval_id = await held(desk)
    status, doc = await desk.admin(
        "POST", f"/v1/admin/approvals/{approval_id}/deny", {"reason": "not today"}
    )
    assert status == 200 and doc["approval"]["status"] == "denied"
    status, doc = await desk.read(approval_id)
    assert status == 200
    assert doc["approval"]["status"] == "denied" and doc["approval"]["reason"] == "not today"
    assert desk.upstream("gitea") == 0
    assert (await desk.approve(approval_id))[0] == 409
    assert desk.upstream("gitea") == 0
    [denied] = desk.audit("approval_denied")
    assert denied["TURRET_REASON"] == "not today"


async def test_approval_approving_twice_is_refused(desk: Desk) -> None:
    approval_id = await held(desk)
    assert (await desk.approve(approval_id))[0] == 200
    status, doc = await desk.approve(approval_id)
    assert status == 409 and doc["error"]["code"] == "conflict"
    assert (await desk.approve(approval_id, deny=True))[0] == 409
    assert len(desk.audit("approval_granted")) == 1


async def test_approval_unknown_and_malformed_ids(desk: Desk) -> None:
    assert (await desk.approve("apr_" + "A" * 24))[0] == 404
    assert (await desk.approve("turret_abc"))[0] == 400
    for raw in ("apr_" + "A" * 24, "nope", "apr_%2e%2e", "apr_" + "A" * 23 + "%2F"):
        status, doc = await desk.read(raw)
        assert status == 404, (raw, doc)
        assert doc["error"]["code"] == "not_found"
        assert raw not in doc["error"]["message"]


@pytest.mark.parametrize("bad", ["-1", "1.5", "abc", "%EF%BC%91", "1e3", "", "9999999"])
async def test_approval_wait_must_be_whole_seconds(desk: Desk, bad: str) -> None:
    approval_id = await held(desk)
    status, doc = await desk.read(approval_id, wait=bad)
    assert status == 400 and doc["error"]["code"] == "bad_request"


async def test_approval_concurrent_reads_perform_the_call_once(desk: Desk) -> None:
    approval_id = await held(desk)
    assert (await desk.approve(approval_id))[0] == 200
    answers = await asyncio.gather(*(desk.read(approval_id, wait=10) for _ in range(4)))
    assert desk.upstream("gitea") == 1
    for status, doc in answers:
        assert status == 200 and doc["approval"]["status"] == "done", doc
        assert doc["result"] == {"number": 7, "state": "closed"}
    assert len(desk.audit("approval_executed")) == 1


async def test_approval_explain_says_a_call_needs_approval(desk: Desk) -> None:
    assert desk.gw is not None
    body = {"capability": CLOSE, "params": {"repo": "infra", "index": 7}}
    resp = await desk.gw.client.post("/v1/explain", json=body, headers=desk.headers())
    decision = (await resp.json())["decision"]
    assert decision["allowed"] is False and decision["approval_required"] is True
    assert not desk.audit("approval_requested") and desk.upstream("gitea") == 0


async def test_approval_cannot_be_set_in_a_derived_tokens_scope(desk: Desk) -> None:
    assert desk.gw is not None
    body = {"ttl": "1h", "capabilities": [{"name": "git.close_issue", "approval": "required"}]}
    resp = await desk.gw.client.post("/v1/tokens", json=body, headers=desk.headers("opencode"))
    doc = await resp.json()
    assert resp.status == 422 and "approval" in doc["error"]["message"]


async def test_approval_listing_says_which_capabilities_wait(desk: Desk) -> None:
    assert desk.gw is not None

    async def listing(agent: str) -> dict[str, dict[str, object]]:
        resp = await desk.gw.client.get("/v1/capabilities", headers=desk.headers(agent))  # type: ignore[union-attr]
        return {c["name"]: c for c in (await resp.json())["capabilities"]}

    alice = await listing("ops/alice")
    assert alice[CLOSE]["approval"] == "required"
    assert alice["push.note"]["approval"] == "conditional"
    assert "approval" not in alice["pve.pct_status"]
    assert "approval" not in (await listing("opencode"))[CLOSE]
