"""The external policy against a fake OPA over HTTP: what it is asked, what allows, every way
an answer denies, and what never reaches OPA or the agent."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from pathlib import Path

import pytest
from aiohttp import web

from tests.conftest import Upstream, assert_error
from tests.gateway import Canaries
from tests.policy.conftest import FakeOpa, opa_gateway
from tests.tokens.conftest import LeaseGateway
from turret.state import StateStore

USER = "/v1/proxy/gitea/api/v1/user"
ISSUE = "/v1/capabilities/gitea.create_issue"
OPA_TEXT = "OPA-SAYS-SOMETHING-PRIVATE"


@pytest.fixture
async def gw(
    upstream: Upstream, leak_check: Canaries, tmp_path: Path, state: StateStore, fake_opa: FakeOpa
) -> LeaseGateway:
    return await opa_gateway(upstream, leak_check, tmp_path, state, fake_opa.url)


def decisions(gw: LeaseGateway) -> list[dict[str, str]]:
    return [r for r in gw.audit() if r["MESSAGE_ID"].endswith("6e04")]


async def test_opa_is_asked_with_the_proxy_input_and_its_true_allows(
    gw: LeaseGateway, fake_opa: FakeOpa, upstream: Upstream
) -> None:
    gw.wall.now = 1_800_000_000.5
    resp = await gw.call("GET", USER, gw.tokens["alice"])
    assert resp.status == 200, await resp.text()
    assert [path for path, _ in fake_opa.queries] == ["/v1/data/turret/allow"]
    assert fake_opa.inputs == [
        {
            "agent": "alice", "token_id": None, "kind": "proxy", "capability": None,
            "params": None, "service": "gitea", "method": "GET", "path": "/api/v1/user",
            "time": 1_800_000_000.5,
        }
    ]  # fmt: skip
    assert len(upstream.received) == 1
    records = gw.audit()
    decision = next(r for r in records if r["MESSAGE_ID"].endswith("6e04"))
    outcome = next(r for r in records if r["MESSAGE_ID"].endswith("6e05"))
    assert decision["TURRET_DECISION"] == "allow" and decision["TURRET_OPA"] == "opa_allowed"
    assert records.index(decision) < records.index(outcome)  # recorded before it was sent


async def test_opa_is_asked_with_a_call_s_checked_params(
    gw: LeaseGateway, fake_opa: FakeOpa
) -> None:
    resp = await gw.call("POST", ISSUE, gw.tokens["alice"], json={"repo": "turret", "title": "t"})
    assert resp.status == 200, await resp.text()
    (doc,) = fake_opa.inputs
    assert doc["kind"] == "capability" and doc["capability"] == "gitea.create_issue"
    assert doc["params"] == {"repo": "turret", "title": "t"} and doc["service"] == "gitea"
    assert doc["method"] is None and doc["path"] is None


async def test_opa_sees_a_derived_token_s_id(gw: LeaseGateway, fake_opa: FakeOpa) -> None:
    scope = {"proxy": [{"service": "gitea", "methods": ["GET"], "paths": ["/api/v1/user"]}]}
    token, token_id = await gw.minted(gw.tokens["alice"], {"ttl": "10m", **scope})
    fake_opa.queries.clear()
    assert (await gw.call("GET", USER, token)).status == 200
    assert fake_opa.inputs[0]["token_id"] == token_id and fake_opa.inputs[0]["agent"] == "alice"


@pytest.mark.parametrize(
    "result",
    [True, {"allow": True}, {"allow": True, "reason": "fine", "extra": [1]}],
    ids=["true", "allow", "allow-with-more"],
)
async def test_opa_allows_only_on_true_or_allow_true(
    gw: LeaseGateway, fake_opa: FakeOpa, result: object
) -> None:
    async def answer(_: web.Request) -> web.StreamResponse:
        return web.json_response({"result": result, "decision_id": "d1"})

    fake_opa.answer = answer
    assert (await gw.call("GET", USER, gw.tokens["alice"])).status == 200


def _json(doc: object, status: int = 200) -> web.Response:
    return web.Response(status=status, text=json.dumps(doc), content_type="application/json")


async def _hang(_: web.Request) -> web.StreamResponse:
    await asyncio.Event().wait()  # never answers; Turret's timeout ends it
    raise AssertionError


async def _cut(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Length": "100"})
    await response.prepare(request)
    await response.write(b'{"result": tr')
    assert request.transport is not None
    request.transport.abort()  # the connection drops mid-answer
    return response


DENIALS: dict[str, tuple[web.Response | object, str]] = {
    "false": (_json({"result": False}), "opa_denied"),
    "allow-false": (_json({"result": {"allow": False, "reason": OPA_TEXT}}), "opa_denied"),
    "undefined": (_json({}), "opa_undefined"),
    "undefined-with-id": (_json({"decision_id": "x"}), "opa_undefined"),
    "null": (_json({"result": None}), "opa_bad_shape"),
    "one": (_json({"result": 1}), "opa_bad_shape"),
    "string-true": (_json({"result": "true"}), "opa_bad_shape"),
    "list": (_json({"result": [True]}), "opa_bad_shape"),
    "empty-object": (_json({"result": {}}), "opa_bad_shape"),
    "allow-one": (_json({"result": {"allow": 1}}), "opa_bad_shape"),
    "allow-string": (_json({"result": {"allow": "true"}}), "opa_bad_shape"),
    "allow-null": (_json({"result": {"allow": None}}), "opa_bad_shape"),
    "nested": (_json({"result": {"result": True}}), "opa_bad_shape"),
    "top-level-true": (_json(True), "opa_bad_shape"),
    "top-level-list": (_json([{"result": True}]), "opa_bad_shape"),
    "not-json": (web.Response(text=f"<html>{OPA_TEXT}</html>"), "opa_not_json"),
    "trailing-garbage": (web.Response(text='{"result": true} x'), "opa_not_json"),
    "duplicate-result": (web.Response(text='{"result": false, "result": true}'), "opa_not_json"),
    "duplicate-allow": (
        web.Response(text='{"result": {"allow": false, "allow": true}}'), "opa_not_json"
    ),
    "not-utf8": (web.Response(body=b'{"result": "\xff"}'), "opa_not_json"),
    "empty-body": (web.Response(body=b""), "opa_not_json"),
    "http-500": (_json({"result": True}, 500), "opa_http_error"),
    "http-404": (_json({"result": True}, 404), "opa_http_error"),
    "http-201": (_json({"result": True}, 201), "opa_http_error"),
    "http-204": (web.Response(status=204), "opa_http_error"),
    "redirect-302": (
        web.Response(status=302, headers={"Location": "/v1/data/turret/yes"}), "opa_redirect"
    ),
    "redirect-307": (
        web.Response(status=307, headers={"Location": "/v1/data/turret/yes"}), "opa_redirect"
    ),
    "too-large": (_json({"result": True, "pad": "x" * 70_000}), "opa_answer_too_large"),
    "timeout": (_hang, "opa_timeout"),
    "cut-off": (_cut, "opa_bad_answer"),
}


@pytest.mark.parametrize("case", sorted(DENIALS))
async def test_opa_every_other_answer_denies_with_its_reason(
    gw: LeaseGateway, fake_opa: FakeOpa, upstream: Upstream, case: str
) -> None:
    made, code = DENIALS[case]

    async def answer(request: web.Request) -> web.StreamResponse:
        if callable(made):
            return await made(request)
        assert isinstance(made, web.Response)
        return web.Response(
            status=made.status, body=made.body, headers=made.headers
        )  # a fresh copy: a response is sent once

    fake_opa.answer = answer
    started = time.monotonic()
    resp = await gw.call("GET", USER, gw.tokens["alice"])
    text = await resp.text()
    await assert_error(resp, 403, "policy_denied")
    assert code in text and OPA_TEXT not in text and "result" not in text
    assert time.monotonic() - started < 5
    assert upstream.received == []  # nothing forwarded
    (decision,) = decisions(gw)
    assert decision["TURRET_DECISION"] == "deny" and decision["TURRET_STATUS"] == "403"
    assert decision["TURRET_OPA"] == code and decision["TURRET_RULE"] == "policy.opa"
    assert code in decision["TURRET_REASON"]
    if case == "allow-false":
        assert OPA_TEXT in decision["TURRET_REASON"]  # the operator sees OPA's reason


async def test_opa_unreachable_denies(
    upstream: Upstream, leak_check: Canaries, tmp_path: Path, state: StateStore
) -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for url in (f"http://127.0.0.1:{port}", f"unix:{tmp_path / 'no-opa.sock'}"):
        gw = await opa_gateway(upstream, leak_check, tmp_path, state, url)
        resp = await gw.call("GET", USER, gw.tokens["alice"])
        await assert_error(resp, 403, "policy_denied")
        assert "opa_unreachable" in await resp.text()
    assert upstream.received == []


async def test_opa_on_a_unix_socket(
    upstream: Upstream, leak_check: Canaries, tmp_path: Path, state: StateStore, unix_opa: FakeOpa
) -> None:
    gw = await opa_gateway(upstream, leak_check, tmp_path, state, unix_opa.url, path="a/b/c")
    assert (await gw.call("GET", USER, gw.tokens["alice"])).status == 200
    assert [p for p, _ in unix_opa.queries] == ["/v1/data/a/b/c"]

    async def deny(_: web.Request) -> web.StreamResponse:
        return web.json_response({"result": False})

    unix_opa.answer = deny
    await assert_error(await gw.call("GET", USER, gw.tokens["alice"]), 403, "policy_denied")
    assert len(upstream.received) == 1


async def test_opa_only_narrows_what_turret_denies_is_never_asked(
    gw: LeaseGateway, fake_opa: FakeOpa
) -> None:
    alice, nod = gw.tokens["alice"], gw.tokens["nod"]
    await assert_error(await gw.call("DELETE", USER, alice), 403, "forbidden")
    await assert_error(await gw.call("GET", "/v1/proxy/gitea/api/v1/admin", nod), 403, "forbidden")
    await assert_error(await gw.call("GET", "/v1/proxy/nosuch/x", alice), 403, "forbidden")
    issue = {"repo": "elsewhere", "title": "t"}
    resp = await gw.call("POST", ISSUE, alice, json=issue)
    assert resp.status == 403
    await assert_error(await gw.call("POST", ISSUE, nod, json={"repo": "turret"}), 403, "forbidden")
    assert fake_opa.queries == []


async def test_opa_never_gets_a_credential_or_token(
    gw: LeaseGateway, fake_opa: FakeOpa, leak_check: Canaries
) -> None:
    alice = gw.tokens["alice"]
    secret = leak_check.credentials["gitea-token"]
    for target in (
        f"/v1/proxy/gitea/api/v1/repos/me/{secret}",
        f"/v1/proxy/gitea/api/v1/repos/me/x/{gw.tokens['nod']}",
        f"/v1/proxy/gitea/api/v1/repos/me/{secret.encode().hex()}",
    ):
        await assert_error(await gw.call("GET", target, alice), 403, "credential_in_request")
    body = {"repo": "turret", "title": secret[:90]}
    await assert_error(await gw.call("POST", ISSUE, alice, json=body), 403, "credential_in_request")
    sent = b"".join(body for _, body in fake_opa.queries)
    leak_check.assert_absent([("OPA queries", sent)])
