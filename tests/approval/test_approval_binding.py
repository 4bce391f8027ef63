"""What an approval is bound to, and what ends it: the clock, another agent or token, a changed
call, a revocation, a seal, a reload, a restart, a notification that fails."""

from __future__ import annotations

import sqlite3

from tests.approval.conftest import APPROVAL_CONFIG, CLOSE, ISSUE, Desk
from tests.approval.test_approval_flow import held
from tests.capabilities.conftest import capability_config
from turret import admin
from turret.config import load_config
from turret.pipeline.approvals import KEEP_SETTLED, prune_approvals
from turret.providers.build import build_runtime
from turret.web.keys import CONTEXT

TTL = 15 * 60


async def test_approval_expires_by_the_clock(desk: Desk) -> None:
    approval_id = await held(desk)
    desk.clock.offset = TTL - 1
    assert (await desk.read(approval_id))[1]["approval"]["status"] == "pending"
    desk.clock.offset = TTL
    status, doc = await desk.read(approval_id)
    assert status == 200 and doc["approval"]["status"] == "expired"
    status, doc = await desk.approve(approval_id)
    assert status == 409 and "expired" in doc["error"]["message"]
    assert desk.upstream("gitea") == 0
    [expired] = desk.audit("approval_expired")
    assert expired["TURRET_APPROVAL_ID"] == approval_id and expired["TURRET_AGENT"] == "ops/alice"


async def test_approval_expired_before_the_operator_looks(desk: Desk) -> None:
    approval_id = await held(desk)
    desk.clock.offset = TTL + 60
    status, _ = await desk.approve(approval_id)  # the admin side expires it first
    assert status == 409
    assert (await desk.admin("GET", "/v1/admin/approvals"))[1]["approvals"] == []
    assert len(desk.audit("approval_expired")) == 1


async def test_approval_approved_but_not_collected_in_time_is_never_performed(desk: Desk) -> None:
    approval_id = await held(desk)
    assert (await desk.approve(approval_id))[0] == 200
    desk.clock.offset = TTL
    status, doc = await desk.read(approval_id)
    assert status == 200 and doc["approval"]["status"] == "expired"
    assert desk.upstream("gitea") == 0


async def test_approval_another_agent_gets_404_as_for_an_unknown_id(desk: Desk) -> None:
    approval_id = await held(desk)
    assert (await desk.approve(approval_id))[0] == 200
    status, doc = await desk.read(approval_id, agent="opencode")
    unknown_status, unknown = await desk.read("apr_" + "B" * 24, agent="opencode")
    assert status == unknown_status == 404
    assert doc["error"]["message"] == unknown["error"]["message"]
    assert desk.upstream("gitea") == 0
    assert (await desk.read(approval_id))[1]["approval"]["status"] == "done"


async def test_approval_is_bound_to_the_token_that_asked(desk: Desk) -> None:
    derived, derived_id = await desk.mint()
    status, doc = await desk.call(token=derived)
    assert status == 202, doc
    approval_id = doc["pending"]["approval_id"]
    assert (await desk.approve(approval_id))[0] == 200
    assert (await desk.read(approval_id))[0] == 404  # the agent's own configured token
    other, _ = await desk.mint()
    assert (await desk.read(approval_id, token=other))[0] == 404  # a sibling token
    assert desk.upstream("gitea") == 0
    status, doc = await desk.read(approval_id, token=derived)
    assert status == 200 and doc["approval"]["status"] == "done"
    [executed] = desk.audit("approval_executed")
    assert executed["TURRET_TOKEN_ID"] == derived_id


async def test_approval_performs_only_the_call_it_was_given(desk: Desk) -> None:
    first = await held(desk, params={"repo": "infra", "index": 7})
    second = await held(desk, params={"repo": "infra", "index": 8})
    assert first != second
    assert (await desk.approve(first))[0] == 200
    # The second call's approval is still pending: the first approval does not carry over.
    assert (await desk.read(second))[1]["approval"]["status"] == "pending"
    assert (await desk.read(first))[1]["result"] == {"number": 7, "state": "closed"}
    assert [r.raw_path for r in desk.fakes.requests("gitea")] == ["/api/v1/repos/me/infra/issues/7"]
    # Asking again for the very same call is a new request for approval, not a replay.
    again = await held(desk, params={"repo": "infra", "index": 7})
    assert (await desk.read(again))[1]["approval"]["status"] == "pending"
    assert desk.upstream("gitea") == 1


async def test_approval_with_altered_parameters_is_never_performed(desk: Desk) -> None:
    approval_id = await held(desk)
    assert (await desk.approve(approval_id))[0] == 200
    # Someone with the state file swaps the call under the approval: the hash no longer fits.
    with sqlite3.connect(desk.tmp / "state" / "turret.db") as db:
        db.execute(
            "UPDATE approvals SET params_summary = ? WHERE id = ?",
            ('{"index":1,"repo":"prod"}', approval_id),
        )
    assert (await desk.read(approval_id))[0] == 404
    assert desk.upstream("gitea") == 0


async def test_approval_revoked_meanwhile_is_not_performed(desk: Desk) -> None:
    approval_id = await held(desk)
    assert (await desk.approve(approval_id))[0] == 200
    assert desk.state is not None and desk.gw is not None
    config = desk.gw.client.app[CONTEXT].holder.current.config
    admin.revoke(desk.state, config, "ops/alice", reason="incident", uid=0, at=desk.clock())
    status, doc = await desk.read(approval_id)
    assert status == 401 and doc["error"]["code"] == "revoked"
    assert desk.upstream("gitea") == 0
    refused = [r for r in desk.audit("decision") if r.get("TURRET_STATUS") == "401"]
    assert refused and refused[-1]["TURRET_PATH"] == f"/v1/approvals/{approval_id}"
    desk.clock.offset = TTL
    admin.unrevoke(desk.state, "ops/alice")
    assert (await desk.read(approval_id))[1]["approval"]["status"] == "expired"
    assert desk.upstream("gitea") == 0


async def test_approval_derived_token_revoked_meanwhile_is_not_performed(desk: Desk) -> None:
    derived, derived_id = await desk.mint()
    approval_id = (await desk.call(token=derived))[1]["pending"]["approval_id"]
    assert (await desk.approve(approval_id))[0] == 200
    assert (await desk.admin("POST", f"/v1/admin/tokens/{derived_id}/revoke"))[0] == 200
    assert (await desk.read(approval_id, token=derived))[0] == 401
    assert desk.upstream("gitea") == 0


async def test_approval_sealed_meanwhile_is_not_performed(desk: Desk) -> None:
    approval_id = await held(desk)
    assert (await desk.approve(approval_id))[0] == 200
    assert (await desk.admin("POST", "/v1/admin/seal", {"reason": "incident"}))[0] == 200
    status, doc = await desk.read(approval_id)
    assert status == 503 and doc["error"]["code"] == "sealed"
    assert desk.upstream("gitea") == 0


async def test_approval_grant_removed_by_reload_is_not_performed(desk: Desk) -> None:
    approval_id = await held(desk)
    assert (await desk.approve(approval_id))[0] == 200
    assert desk.gw is not None and desk.gw.client.app is not None
    holder = desk.gw.client.app[CONTEXT].holder
    text = holder.current.config
    urls = {s.kind: s.url for s in text.services.values() if s.kind}
    config = load_config(capability_config(urls, desk.tokens, ""))
    holder.current = build_runtime(config, str(desk.tmp / "credentials"))
    status, doc = await desk.read(approval_id)
    assert status == 403 and doc["error"]["code"] == "forbidden"
    assert desk.upstream("gitea") == 0
    [refused] = desk.audit("approval_refused")
    assert refused["TURRET_APPROVAL_ID"] == approval_id


async def test_approval_survives_a_restart_while_pending(desk: Desk) -> None:
    approval_id = await held(desk)
    await desk.restart()
    [listed] = (await desk.admin("GET", "/v1/admin/approvals"))[1]["approvals"]
    assert listed["id"] == approval_id and listed["params"] == ISSUE
    assert (await desk.approve(approval_id))[0] == 200
    status, doc = await desk.read(approval_id)
    assert status == 200 and doc["result"] == {"number": 7, "state": "closed"}
    await desk.restart()
    # Performed before this restart: its status is kept, its answer was in memory only.
    status, doc = await desk.read(approval_id)
    assert status == 200 and doc["approval"]["status"] == "done"
    assert doc["approval"]["result_status"] == 200 and "result" not in doc
    assert desk.upstream("gitea") == 1


async def test_approval_notify_failure_is_recorded_and_stays_pending(desk: Desk) -> None:
    await desk.servers["ntfy"].close()
    approval_id = await held(desk)
    [failed] = desk.audit("approval_notify_failed")
    assert failed["TURRET_APPROVAL_ID"] == approval_id and failed["TURRET_NOTIFY"] == "push.publish"
    [listed] = (await desk.admin("GET", "/v1/admin/approvals"))[1]["approvals"]
    assert listed["id"] == approval_id and listed["status"] == "pending"


async def test_approval_without_notify_settings_still_holds(desk: Desk) -> None:
    await desk.stop()
    await desk.start(APPROVAL_CONFIG.split("approvals:")[0])
    approval_id = await held(desk)
    assert desk.fakes.requests("ntfy") == []
    assert (await desk.read(approval_id))[1]["approval"]["status"] == "pending"
    assert CLOSE in (await desk.cli("approvals"))[1]


async def test_approval_pruner_expires_and_forgets(desk: Desk) -> None:
    assert desk.gw is not None and desk.state is not None
    ctx = desk.gw.client.app[CONTEXT]
    approval_id = await held(desk)
    desk.clock.offset = TTL
    prune_approvals(ctx)
    [expired] = desk.audit("approval_expired")
    assert expired["TURRET_APPROVAL_ID"] == approval_id
    assert desk.state.approvals.get(approval_id) is not None  # listed a while longer
    desk.clock.offset = TTL + KEEP_SETTLED
    prune_approvals(ctx)
    assert desk.state.approvals.get(approval_id) is None
    assert len(desk.audit("approval_expired")) == 1
