"""No secret reaches an approval: a held call's parameters pass the exfiltration guard before the
approval exists, in every form the guard knows; the listing, the CLI and the state directory
never show a credential or a token (the `desk` fixture checks them all at the end)."""

from __future__ import annotations

import base64
import json

import pytest

from tests.approval.conftest import Desk


def forms(secret: str) -> list[str]:
    """Ways a secret may be written into a free-text parameter."""
    return [
        secret,
        base64.b64encode(secret.encode()).decode(),
        secret.encode().hex(),
        " ".join(secret),  # spread out by spaces
    ]


@pytest.mark.parametrize("form", range(4))
@pytest.mark.parametrize("which", ["credential", "own token", "other agent's token"])
async def test_approval_secret_in_params_is_refused_before_any_approval(
    desk: Desk, which: str, form: int
) -> None:
    secret = {
        "credential": desk.creds.credentials["gitea-token"],
        "own token": desk.tokens["ops/alice"],
        "other agent's token": desk.tokens["opencode"],
    }[which]
    text = "prod " + forms(secret)[form]
    status, doc = await desk.call("push.note", {"text": text[:200]})
    assert status == 403 and doc["error"]["code"] == "credential_in_request", doc
    assert desk.state is not None and desk.state.approvals.pending() == []
    assert not desk.audit("approval_requested") and desk.fakes.requests("ntfy") == []


async def test_approval_json_escaped_secret_is_refused(desk: Desk) -> None:
    secret = desk.creds.credentials["ntfy-token"]
    escaped = "".join(f"\\u{ord(c):04x}" for c in secret)
    raw = ('{"text": "prod ' + escaped + '"}').encode()
    assert desk.gw is not None
    resp = await desk.gw.client.post(
        "/v1/capabilities/push.note", data=raw, headers=desk.headers()
    )
    assert resp.status == 403
    assert desk.state is not None and desk.state.approvals.pending() == []


async def test_approval_listing_shows_params_and_nothing_else(desk: Desk) -> None:
    assert (await desk.call("push.note", {"text": "prod: rotate the keys"}))[0] == 202
    [listed] = (await desk.admin("GET", "/v1/admin/approvals"))[1]["approvals"]
    assert listed["params"] == {"text": "prod: rotate the keys"}
    assert set(listed) == {
        "id", "agent", "capability", "params", "status", "created", "expires_at",
        "decided_at", "approver_uid", "reason", "result_status",
    }  # fmt: skip
    assert json.dumps(listed).count(desk.tokens["ops/alice"]) == 0
