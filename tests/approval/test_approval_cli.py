"""`turret approvals`, `turret approve ID`, `turret deny ID --reason` against a running Turret:
the exact call is shown, and no credential or token is in any output (nor in the state
directory, checked by the fixture)."""

from __future__ import annotations

import json

from tests.approval.conftest import CLOSE, Desk
from tests.approval.test_approval_flow import held


async def test_approval_cli_lists_the_exact_call(desk: Desk) -> None:
    assert (await desk.cli("approvals"))[1].strip() == "no approvals pending"
    approval_id = await held(desk)
    code, out, _ = await desk.cli("approvals")
    assert code == 0
    assert approval_id in out and CLOSE in out and "ops/alice" in out
    assert '{"index": 7, "repo": "infra"}' in out
    code, out, _ = await desk.cli("approvals", "--json")
    [doc] = json.loads(out)["approvals"]
    assert doc["params"] == {"repo": "infra", "index": 7} and doc["status"] == "pending"


async def test_approval_cli_approve_then_the_agent_collects(desk: Desk) -> None:
    approval_id = await held(desk)
    code, out, _ = await desk.cli("approve", approval_id)
    assert code == 0 and out.strip() == f"{approval_id}: approved (ops/alice {CLOSE})"
    code, _, err = await desk.cli("approve", approval_id)
    assert code == 1 and "is approved, not pending" in err
    assert (await desk.read(approval_id))[1]["approval"]["status"] == "done"
    [granted] = desk.audit("approval_granted")
    assert int(granted["TURRET_OPERATOR_UID"]) >= 0


async def test_approval_cli_deny_with_a_reason(desk: Desk) -> None:
    approval_id = await held(desk)
    code, out, _ = await desk.cli("deny", approval_id, "--reason", "prod freeze")
    assert code == 0 and "denied" in out
    status, doc = await desk.read(approval_id)
    assert status == 200
    assert doc["approval"] == {
        "approval_id": approval_id,
        "status": "denied",
        "expires_at": doc["approval"]["expires_at"],
        "reason": "prod freeze",
    }
    assert desk.upstream("gitea") == 0


async def test_approval_cli_refuses_a_malformed_id_before_asking(desk: Desk) -> None:
    for bad in ("../seal", "apr_short", "turret_" + "a" * 43):
        code, _, err = await desk.cli("approve", bad)
        assert code == 2 and "approval id" in err
    assert (await desk.admin("GET", "/v1/admin/status"))[1]["sealed"] is None
