"""The capability API through `turret.pipeline.calls`, without HTTP: list, call, explain."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable

import pytest

from tests.pipeline.conftest import Pipe, ok_response
from turret.errors import (
    AuditUnavailable,
    BadRequest,
    CredentialInRequest,
    Forbidden,
    NotFound,
    RequestError,
    TooManyRequests,
    UnprocessableEntity,
    UpstreamStatus,
)
from turret.pipeline.calls import call, explain, listing
from turret.records import Event

CLOSE = "/v1/capabilities/gitea.close_issue"


async def refused(pipe: Pipe, pending: Awaitable[object]) -> RequestError:
    """The error `pending` is refused with, kept for the leak check."""
    with pytest.raises(RequestError) as info:
        await pending
    return pipe.refused(info.value)


def params(**values: object) -> bytes:
    return json.dumps(values).encode()


async def test_call_sends_template_and_projects_result(pipe: Pipe) -> None:
    answer = ok_response(b'{"number": 3, "state": "closed", "title": "x", "body": "long"}')
    io = pipe.exchange(params(repo="turret", index=3), response=answer)
    reply = pipe.keep(await call(pipe.ctx, pipe.incoming("POST", CLOSE), io))
    assert reply.json == {"ok": True, "result": {"number": 3, "state": "closed"}}
    (out,) = io.forwarded
    assert (out.method, out.path.encoded, out.query) == (
        "PATCH",
        "/api/v1/repos/me/turret/issues/3",
        "",
    )
    assert json.loads(out.body) == {"state": "closed"}
    assert io.records_at_forward == [[Event.DECISION]]
    decision = pipe.recorder.last(Event.DECISION)
    assert decision["TURRET_CAPABILITY"] == "gitea.close_issue"
    assert json.loads(str(decision["TURRET_PARAMS"])) == {"repo": "turret", "index": 3}
    assert pipe.recorder.last(Event.OUTCOME)["TURRET_REASON"] == "done"


async def test_call_lost_decision_record_never_forwards(pipe: Pipe) -> None:
    pipe.recorder.lose = Event.DECISION
    io = pipe.exchange(params(repo="turret", index=3))
    with pytest.raises(AuditUnavailable):
        await call(pipe.ctx, pipe.incoming("POST", CLOSE), io)
    assert io.forwarded == []
    assert pipe.ctx.limiter.in_flight("opencode") == 0


@pytest.mark.parametrize(
    ("agent", "target", "rule"),
    [
        ("opencode", "/v1/capabilities/gitea.delete_repo", "agents.opencode.deny[0]"),  # deny rule
        ("other", CLOSE, None),  # no grant by that name
    ],
)
async def test_call_denied_by_name_never_reads_body(
    pipe: Pipe, agent: str, target: str, rule: str | None
) -> None:
    answers = []
    for body in (params(repo=pipe.canaries["gitea-token"]), b"not even json"):
        io = pipe.exchange(body)
        exc = await refused(pipe, call(pipe.ctx, pipe.incoming("POST", target, agent=agent), io))
        assert isinstance(exc, Forbidden) and io.body_calls == 0 and io.forwarded == []
        assert pipe.recorder.last(Event.DECISION)["TURRET_RULE"] == rule
        answers.append((exc.status, exc.code, exc.message))
    assert answers[0] == answers[1]  # the answer cannot depend on what it carried


@pytest.mark.parametrize(
    "body",
    [
        params(repo="Secret-Value-Q7", index=3),  # pattern
        params(repo="turret", index="Secret-Value-Q7"),  # type
        params(repo="turret", index=3, **{"Secret-Value-Q7": 1}),  # unknown name
        params(repo="turret"),  # missing
        b'{"repo": "turret", "repo": "Secret-Value-Q7", "index": 3}',  # duplicate key
    ],
)
async def test_call_invalid_params_never_quote_what_was_sent(pipe: Pipe, body: bytes) -> None:
    io = pipe.exchange(body)
    exc = await refused(pipe, call(pipe.ctx, pipe.incoming("POST", CLOSE), io))
    assert isinstance(exc, UnprocessableEntity | BadRequest) and io.forwarded == []
    assert "Secret-Value-Q7" not in exc.message and "Q7" not in exc.message
    assert pipe.recorder.last(Event.DECISION)["TURRET_STATUS"] == exc.status


async def test_call_constraint_denial_names_param_not_value(pipe: Pipe) -> None:
    io = pipe.exchange(params(repo="elsewhere", index=3))
    exc = await refused(pipe, call(pipe.ctx, pipe.incoming("POST", CLOSE), io))
    assert isinstance(exc, Forbidden) and io.forwarded == []
    assert "params.repo" in exc.message and "elsewhere" not in exc.message


@pytest.mark.parametrize(
    "text",
    [
        "canary",
        "escaped",  # a JSON escape hides it from the bytes, not from the parameter
        "token",
    ],
)
async def test_call_carrying_secret_is_refused(pipe: Pipe, text: str) -> None:
    canary = pipe.canaries["api-key"]  # a credential the config loads
    value = {
        "canary": f"see {canary}",
        "escaped": "\\u0043" + canary[1:],
        "token": pipe.tokens["other"],
    }
    raw = ('{"text": "%s"}' % value[text]).encode()  # noqa: UP031 - the escape must stay raw
    io = pipe.exchange(raw)
    exc = await refused(
        pipe, call(pipe.ctx, pipe.incoming("POST", "/v1/capabilities/gitea.note"), io)
    )
    assert isinstance(exc, CredentialInRequest) and io.forwarded == []
    assert pipe.recorder.last(Event.DECISION)["TURRET_DECISION"] == "deny"


async def test_call_result_is_redacted(pipe: Pipe) -> None:
    leaked = pipe.canaries["gitea-token"]
    answer = ok_response(json.dumps({"number": 3, "state": leaked}).encode())
    io = pipe.exchange(params(repo="web", index=3), response=answer)
    reply = pipe.keep(await call(pipe.ctx, pipe.incoming("POST", CLOSE), io))
    assert leaked not in json.dumps(reply.json)
    assert pipe.recorder.last(Event.OUTCOME)["TURRET_REDACTIONS"] == 1


async def test_call_upstream_error_status_recorded(pipe: Pipe) -> None:
    io = pipe.exchange(params(repo="web", index=3), response=ok_response(b"{}", status=500))
    exc = await refused(pipe, call(pipe.ctx, pipe.incoming("POST", CLOSE), io))
    assert isinstance(exc, UpstreamStatus) and len(io.forwarded) == 1
    assert pipe.recorder.events() == [Event.DECISION, Event.OUTCOME]
    assert pipe.recorder.last(Event.OUTCOME)["TURRET_STATUS"] == 502


@pytest.mark.parametrize(
    ("target", "error"),
    [
        ("/v1/capabilities/gitea.nosuch", NotFound),
        ("/v1/capabilities/gitea.%63lose_issue", BadRequest),  # no escapes in a name
        ("/v1/capabilities/", BadRequest),
    ],
)
async def test_call_unknown_or_malformed_name_never_reads_body(
    pipe: Pipe, target: str, error: type[RequestError]
) -> None:
    io = pipe.exchange(params(repo="turret", index=3))
    exc = await refused(pipe, call(pipe.ctx, pipe.incoming("POST", target), io))
    assert isinstance(exc, error) and io.body_calls == 0
    assert pipe.recorder.last(Event.DECISION)["TURRET_STATUS"] == exc.status


async def test_call_report_mode_allows_and_records_would_deny(pipe: Pipe) -> None:
    io = pipe.exchange(params(repo="anything", index=1), response=ok_response(b'{"number": 1}'))
    pipe.keep(await call(pipe.ctx, pipe.incoming("POST", CLOSE, agent="rollout"), io))
    assert len(io.forwarded) == 1
    assert pipe.recorder.last(Event.DECISION)["TURRET_REPORT"] == "would-deny"


async def test_listing_shows_granted_capabilities_narrowed(pipe: Pipe) -> None:
    reply = pipe.keep(await listing(pipe.ctx, pipe.incoming("GET", "/v1/capabilities")))
    assert isinstance(reply.json, dict)
    shown = {c["name"]: c for c in reply.json["capabilities"]}
    assert set(shown) == {"gitea.close_issue", "gitea.note"}  # delete_repo is denied by name
    repo = shown["gitea.close_issue"]["parameters"]["properties"]["repo"]
    assert repo.get("enum") == ["turret", "web"]
    assert pipe.recorder.last(Event.DECISION)["TURRET_DECISION"] == "allow"


async def test_listing_for_agent_without_grants_is_empty(pipe: Pipe) -> None:
    incoming = pipe.incoming("GET", "/v1/capabilities", agent="other")
    reply = pipe.keep(await listing(pipe.ctx, incoming))
    assert reply.json == {"ok": True, "capabilities": []}


async def test_explain_never_acts(pipe: Pipe) -> None:
    body = {"capability": "gitea.close_issue", "params": {"repo": "turret", "index": 3}}
    io = pipe.exchange(json.dumps(body).encode())
    reply = pipe.keep(await explain(pipe.ctx, pipe.incoming("POST", "/v1/explain"), io))
    assert isinstance(reply.json, dict) and reply.json["decision"]["allowed"] is True
    assert io.forwarded == [] and pipe.recorder.events() == [Event.DECISION]
    assert str(pipe.recorder.last(Event.DECISION)["TURRET_REASON"]).startswith("explain only")


@pytest.mark.parametrize("agent", ["opencode", "rollout"])
async def test_explain_proxy_reason_quotes_nothing_sent(pipe: Pipe, agent: str) -> None:
    async def asked(path: str) -> object:
        body = {"service": "gitea", "method": "GET", "path": path}
        io = pipe.exchange(json.dumps(body).encode())
        reply = pipe.keep(
            await explain(pipe.ctx, pipe.incoming("POST", "/v1/explain", agent=agent), io)
        )
        assert io.forwarded == [] and isinstance(reply.json, dict)
        return reply.json["decision"]

    secret = await asked("/x/" + pipe.canaries["gitea-token"])
    guess = await asked("/x/CANARY-gitea-token-000000000000000000000000")
    assert secret == guess
    assert isinstance(secret, dict) and secret["report_only"] is (agent == "rollout")


async def test_call_holds_a_concurrency_slot_while_forwarding(pipe: Pipe) -> None:
    entered, release = asyncio.Event(), asyncio.Event()

    async def hold() -> None:
        entered.set()
        await release.wait()

    target, note = "/v1/capabilities/gitea.note", params(text="hi")
    first = pipe.exchange(note, hold=hold)
    task = asyncio.create_task(call(pipe.ctx, pipe.incoming("POST", target, agent="tight"), first))
    await entered.wait()
    assert pipe.ctx.limiter.in_flight("tight") == 1
    second = pipe.exchange(note)
    exc = await refused(pipe, call(pipe.ctx, pipe.incoming("POST", target, agent="tight"), second))
    assert isinstance(exc, TooManyRequests) and second.forwarded == []
    assert pipe.recorder.last(Event.DECISION)["TURRET_STATUS"] == 429  # refused at admission
    release.set()
    pipe.keep(await task)
    assert pipe.ctx.limiter.in_flight("tight") == 0
