"""Human approval under an external policy (OPA): OPA narrows held calls too. A call OPA denies
is never held (no approval, no notice), and an approved call is asked about again when it is
performed, so a policy changed in between stops it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from tests.approval.conftest import APPROVAL_CONFIG, Desk
from tests.approval.test_approval_flow import held
from tests.policy.conftest import FakeOpa, fake_opa

__all__ = ["fake_opa"]


async def deny(_: web.Request) -> web.StreamResponse:
    return web.json_response({"result": False})


@pytest.fixture
async def opa_desk(desk: Desk, fake_opa: FakeOpa) -> AsyncIterator[Desk]:
    """The approval desk restarted with `policy.opa` pointing at the fake OPA."""
    await desk.stop()
    await desk.start(APPROVAL_CONFIG + f"policy:\n  opa: {{url: {fake_opa.url}}}\n")
    yield desk


async def test_approval_call_opa_denies_is_never_held(opa_desk: Desk, fake_opa: FakeOpa) -> None:
    fake_opa.answer = deny
    status, doc = await opa_desk.call()
    assert status == 403 and doc["error"]["code"] == "policy_denied", doc
    assert opa_desk.audit("approval_requested") == []
    assert opa_desk.upstream("gitea") == 0 and opa_desk.upstream("ntfy") == 0
    (query,) = fake_opa.inputs
    assert query["capability"] == "git.close_issue" and query["agent"] == "ops/alice"


async def test_approval_opa_asked_again_when_the_approved_call_is_performed(
    opa_desk: Desk, fake_opa: FakeOpa
) -> None:
    approval_id = await held(opa_desk)  # OPA allowed the request for approval
    assert len(fake_opa.queries) == 1
    assert (await opa_desk.approve(approval_id))[0] == 200
    fake_opa.answer = deny  # the policy changed while the person decided
    status, doc = await opa_desk.read(approval_id)
    assert status == 403 and doc["error"]["code"] == "policy_denied", doc
    assert opa_desk.upstream("gitea") == 0
    assert len(fake_opa.queries) == 2
    [refused] = opa_desk.audit("approval_refused")
    assert refused["TURRET_APPROVAL_ID"] == approval_id


async def test_approval_opa_allowing_both_times_performs_the_call(
    opa_desk: Desk, fake_opa: FakeOpa
) -> None:
    approval_id = await held(opa_desk)
    assert (await opa_desk.approve(approval_id))[0] == 200
    status, doc = await opa_desk.read(approval_id)
    assert status == 200 and doc["approval"]["status"] == "done", doc
    assert opa_desk.upstream("gitea") == 1 and len(fake_opa.queries) == 2
