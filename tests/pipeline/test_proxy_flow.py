"""The guarded proxy through `turret.pipeline.proxy`, without HTTP: the order of its checks."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Awaitable
from urllib.parse import quote

import pytest

from tests.pipeline.conftest import Pipe, ok_response
from turret.errors import (
    AuditUnavailable,
    BadGateway,
    BadRequest,
    CredentialInRequest,
    Forbidden,
    PayloadTooLarge,
    RequestError,
    TooManyRequests,
    Unauthorized,
)
from turret.pipeline.proxy import proxy
from turret.pipeline.request import Reply
from turret.records import Event


async def refused(pipe: Pipe, pending: Awaitable[object]) -> RequestError:
    """The error `pending` is refused with, kept for the leak check."""
    with pytest.raises(RequestError) as info:
        await pending
    return pipe.refused(info.value)


async def test_proxy_records_decision_before_forward(pipe: Pipe) -> None:
    io = pipe.exchange()
    reply = pipe.keep(
        await proxy(pipe.ctx, pipe.incoming("GET", "/v1/proxy/gitea/api/v1/user"), io)
    )
    assert reply.status == 200 and reply.body == b'{"ok": 1}'
    assert io.records_at_forward == [[Event.DECISION]]  # the decision, and nothing after it yet
    assert pipe.recorder.events() == [Event.DECISION, Event.OUTCOME]
    decision = pipe.recorder.last(Event.DECISION)
    assert decision["TURRET_DECISION"] == "allow" and decision["TURRET_AGENT"] == "opencode"


async def test_proxy_lost_decision_record_never_forwards(pipe: Pipe) -> None:
    pipe.recorder.lose = Event.DECISION
    io = pipe.exchange(b"payload")
    with pytest.raises(AuditUnavailable):
        await proxy(pipe.ctx, pipe.incoming("POST", "/v1/proxy/gitea/api/v1/repos/me/x"), io)
    assert io.forwarded == [] and io.body_calls == 0
    assert pipe.ctx.limiter.in_flight("opencode") == 0


async def test_proxy_denied_never_reads_body(pipe: Pipe) -> None:
    io = pipe.exchange(b"anything")
    exc = await refused(pipe, proxy(pipe.ctx, pipe.incoming("POST", "/v1/proxy/gitea/admin"), io))
    assert isinstance(exc, Forbidden) and exc.message == "no grant allows this request"
    assert io.body_calls == 0 and io.forwarded == []
    assert pipe.recorder.last(Event.DECISION)["TURRET_STATUS"] == 403


@pytest.mark.parametrize("where", ["service", "path", "query", "header", "body"])
async def test_proxy_denied_answer_ignores_secret_it_carries(pipe: Pipe, where: str) -> None:
    """A denied request is answered the same whatever it carries: no oracle for a guess."""
    secret = pipe.canaries["gitea-token"]

    async def denial(value: str) -> tuple[str, str, int]:
        service = value if where == "service" else "gitea"
        path = f"/v1/proxy/{service}/admin/{value if where == 'path' else 'x'}"
        query = f"?q={value}" if where == "query" else ""
        headers = {"X-Note": value} if where == "header" else {}
        io = pipe.exchange(value.encode() if where == "body" else b"")
        exc = await refused(
            pipe, proxy(pipe.ctx, pipe.incoming("POST", path + query, headers=headers), io)
        )
        assert io.body_calls == 0 and io.forwarded == []
        return exc.message, exc.code, exc.status  # the record may differ: its secret is redacted

    assert await denial(secret) == await denial("CANARY-gitea-token-000000000000000000000000")


def _placed(where: str, value: str) -> tuple[str, dict[str, str], bytes]:
    base = "/v1/proxy/gitea/api/v1/repos/me/"
    if where == "path":
        return base + quote(value, safe=""), {}, b""
    if where == "query":
        return base + "x?note=" + quote(value, safe=""), {}, b""
    if where == "header":
        return base + "x", {"X-Note": value}, b""
    return base + "x", {}, json.dumps({"note": value}).encode()


@pytest.mark.parametrize("where", ["path", "query", "header", "body"])
@pytest.mark.parametrize("form", ["plain", "percent", "base64", "own-token", "other-token"])
async def test_proxy_allowed_request_carrying_secret_is_refused(
    pipe: Pipe, where: str, form: str
) -> None:
    canary = pipe.canaries["api-key"]
    value = {
        "plain": canary,
        "percent": "".join(f"%{b:02X}" for b in canary.encode()),
        "base64": base64.b64encode(canary.encode()).decode(),
        "own-token": pipe.tokens["opencode"],
        "other-token": pipe.tokens["other"],  # never presented: caught by its shape
    }[form]
    target, headers, body = _placed(where, value)
    io = pipe.exchange(body)
    exc = await refused(pipe, proxy(pipe.ctx, pipe.incoming("POST", target, headers=headers), io))
    assert isinstance(exc, CredentialInRequest) and exc.code == "credential_in_request"
    assert io.forwarded == []
    outcome = pipe.recorder.last(Event.OUTCOME)
    assert outcome["TURRET_STATUS"] == 403
    assert str(outcome["TURRET_REASON"]).startswith("exfiltration guard: credential material")


async def test_proxy_method_override_refused_before_forward(pipe: Pipe) -> None:
    io = pipe.exchange(b"_method=DELETE")
    incoming = pipe.incoming(
        "POST",
        "/v1/proxy/gitea/api/v1/repos/me/x",
        content_type="application/x-www-form-urlencoded",
    )
    exc = await refused(pipe, proxy(pipe.ctx, incoming, io))
    assert type(exc) is Forbidden and io.forwarded == []


@pytest.mark.parametrize("agent", ["opencode", "rollout"])
async def test_proxy_unknown_service_denied_even_in_report_mode(pipe: Pipe, agent: str) -> None:
    io = pipe.exchange()
    incoming = pipe.incoming("GET", "/v1/proxy/nosuch/api/v1/user", agent=agent)
    exc = await refused(pipe, proxy(pipe.ctx, incoming, io))
    assert isinstance(exc, Forbidden) and io.body_calls == 0 and io.forwarded == []
    decision = pipe.recorder.last(Event.DECISION)
    assert decision["TURRET_DECISION"] == "deny" and decision["TURRET_REPORT"] is None


async def test_proxy_report_mode_allows_and_records_would_deny(pipe: Pipe) -> None:
    io = pipe.exchange()
    incoming = pipe.incoming("GET", "/v1/proxy/gitea/api/v1/repos/x", agent="rollout")
    pipe.keep(await proxy(pipe.ctx, incoming, io))
    assert len(io.forwarded) == 1
    decision = pipe.recorder.last(Event.DECISION)
    assert decision["TURRET_DECISION"] == "allow" and decision["TURRET_REPORT"] == "would-deny"


async def test_proxy_deny_rule_wins_in_report_mode(pipe: Pipe) -> None:
    io = pipe.exchange()
    incoming = pipe.incoming("GET", "/v1/proxy/gitea/api/v1/admin/users", agent="rollout")
    exc = await refused(pipe, proxy(pipe.ctx, incoming, io))
    assert exc.message == "denied by agents.rollout.deny[0]" and io.forwarded == []


async def test_proxy_outbound_is_the_checked_request(pipe: Pipe) -> None:
    io = pipe.exchange(b'{"a": 1}')
    headers = [("X-Note", "kept"), ("Connection", "close"), ("Cookie", "c=1")]
    target = "/v1/proxy/gitea/api/v1/repos/me/%2E%2E%2Fx?b=2&a=1"
    with pytest.raises(RequestError):  # "%2E%2E%2F" decodes into a traversal: refused, not sent
        await proxy(pipe.ctx, pipe.incoming("POST", target, headers=headers), io)
    assert io.forwarded == []
    target = "/v1/proxy/gitea/api/v1/repos/me/t%75rret?b=2&a=1"
    pipe.keep(await proxy(pipe.ctx, pipe.incoming("POST", target, headers=headers), io))
    (out,) = io.forwarded
    assert (out.method, out.path.encoded, out.query, out.body) == (
        "POST",
        "/api/v1/repos/me/turret",
        "b=2&a=1",
        b'{"a": 1}',
    )
    assert out.headers.get("X-Note") == "kept" and "Authorization" not in out.headers
    assert "Connection" not in out.headers


async def test_proxy_reply_and_outcome_carry_upstream_answer(pipe: Pipe) -> None:
    answer = ok_response(b"created", status=201)
    io = pipe.exchange(b"12345", response=answer)
    reply = pipe.keep(
        await proxy(pipe.ctx, pipe.incoming("POST", "/v1/proxy/gitea/api/v1/repos/me/x"), io)
    )
    assert (reply.status, reply.body, reply.headers) == (201, b"created", answer.headers)
    outcome = pipe.recorder.last(Event.OUTCOME)
    assert outcome["TURRET_STATUS"] == 201 and outcome["TURRET_REASON"] == "forwarded"
    assert (outcome["TURRET_BYTES_IN"], outcome["TURRET_BYTES_OUT"]) == (5, 7)


async def test_proxy_body_error_recorded_and_not_forwarded(pipe: Pipe) -> None:
    io = pipe.exchange(error=PayloadTooLarge("request body is larger than 1024 bytes"))
    exc = await refused(
        pipe, proxy(pipe.ctx, pipe.incoming("POST", "/v1/proxy/gitea/api/v1/user"), io)
    )
    assert exc.status == 413 and io.forwarded == []
    assert pipe.recorder.last(Event.OUTCOME)["TURRET_STATUS"] == 413
    assert pipe.ctx.limiter.in_flight("opencode") == 0


async def test_proxy_upstream_error_recorded_and_slot_released(pipe: Pipe) -> None:
    io = pipe.exchange(forward_error=BadGateway("upstream unreachable"))
    exc = await refused(
        pipe, proxy(pipe.ctx, pipe.incoming("GET", "/v1/proxy/gitea/api/v1/user"), io)
    )
    assert exc.status == 502
    assert pipe.recorder.events() == [Event.DECISION, Event.OUTCOME]
    assert pipe.ctx.limiter.in_flight("opencode") == 0


async def test_proxy_bad_target_refused_and_recorded(pipe: Pipe) -> None:
    exc = await refused(pipe, proxy(pipe.ctx, pipe.incoming("GET", "/v2/other"), pipe.exchange()))
    assert isinstance(exc, BadRequest)
    assert pipe.recorder.last(Event.DECISION)["TURRET_STATUS"] == 400


@pytest.mark.parametrize(
    "headers",
    [[], [("Authorization", "Bearer nope")], [("Authorization", "Basic eDp5")]],
)
async def test_proxy_without_valid_token_is_401_and_recorded(
    pipe: Pipe, headers: list[tuple[str, str]]
) -> None:
    incoming = pipe.incoming("GET", "/v1/proxy/gitea/api/v1/user", agent=None, headers=headers)
    io = pipe.exchange()
    exc = await refused(pipe, proxy(pipe.ctx, incoming, io))
    assert isinstance(exc, Unauthorized) and io.forwarded == []
    assert pipe.recorder.last(Event.DECISION)["TURRET_STATUS"] == 401


async def test_proxy_two_authorization_headers_refused(pipe: Pipe) -> None:
    token = pipe.tokens["opencode"]
    headers = [("Authorization", f"Bearer {token}"), ("Authorization", f"Bearer {token}")]
    incoming = pipe.incoming("GET", "/v1/proxy/gitea/api/v1/user", agent=None, headers=headers)
    exc = await refused(pipe, proxy(pipe.ctx, incoming, pipe.exchange()))
    assert isinstance(exc, Unauthorized)


async def test_proxy_rate_limit_429_until_the_clock_refills(pipe: Pipe) -> None:
    def run() -> Awaitable[Reply]:
        return proxy(
            pipe.ctx,
            pipe.incoming("GET", "/v1/proxy/gitea/api/v1/user", agent="tight"),
            pipe.exchange(),
        )

    for _ in range(2):  # burst 2
        pipe.keep(await run())
    exc = await refused(pipe, run())
    assert isinstance(exc, TooManyRequests) and exc.retry_after == 1
    assert pipe.recorder.last(Event.DECISION)["TURRET_STATUS"] == 429
    pipe.clock.now += 1.0  # one request a second
    pipe.keep(await run())


async def test_proxy_concurrency_limit_while_one_is_in_flight(pipe: Pipe) -> None:
    entered, release = asyncio.Event(), asyncio.Event()

    async def hold() -> None:
        entered.set()
        await release.wait()

    first = pipe.exchange(hold=hold)
    target = "/v1/proxy/gitea/slow"
    task = asyncio.create_task(proxy(pipe.ctx, pipe.incoming("GET", target, agent="tight"), first))
    await entered.wait()
    assert pipe.ctx.limiter.in_flight("tight") == 1
    second = pipe.exchange()
    exc = await refused(pipe, proxy(pipe.ctx, pipe.incoming("GET", target, agent="tight"), second))
    assert isinstance(exc, TooManyRequests) and "concurrency" in str(
        pipe.recorder.last(Event.DECISION)["TURRET_REASON"]
    )
    assert second.forwarded == []
    release.set()
    pipe.keep(await task)
    assert pipe.ctx.limiter.in_flight("tight") == 0
