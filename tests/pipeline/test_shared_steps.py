"""The steps every endpoint shares (whoami, unrouted refusals, the flood gate, the runtime a
request keeps), `decide` on a `Principal` and its restrictions, and a real audit trail."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest

from tests.pipeline.conftest import Pipe, make_pipe
from turret.audit import Auditor, LineSink
from turret.errors import MethodNotAllowed, NotFound, RequestError, TooManyRequests, Unauthorized
from turret.model import Action, CapabilityAction, ProxyAction
from turret.paths import canonical_path
from turret.pipeline.calls import call
from turret.pipeline.proxy import proxy, whoami
from turret.pipeline.request import record_flood_summary, unrouted
from turret.policy import Decision, Result, decide
from turret.principal import Principal
from turret.ratelimit import Flooded
from turret.records import Event


async def test_whoami_answers_agent_and_grants_and_spends_rate(pipe: Pipe) -> None:
    reply = pipe.keep(await whoami(pipe.ctx, pipe.incoming("GET", "/v1/whoami", agent="tight")))
    assert reply.json == {
        "ok": True,
        "agent": "tight",
        "grants": {
            "proxy": [{"service": "gitea", "methods": ["GET"], "paths": ["/api/v1/user", "/slow"]}]
        },
    }
    assert pipe.recorder.last(Event.DECISION)["TURRET_DECISION"] == "allow"
    pipe.keep(await whoami(pipe.ctx, pipe.incoming("GET", "/v1/whoami", agent="tight")))
    with pytest.raises(TooManyRequests):  # burst 2: whoami is charged like any request
        await whoami(pipe.ctx, pipe.incoming("GET", "/v1/whoami", agent="tight"))
    assert pipe.ctx.limiter.in_flight("tight") == 0


async def test_whoami_without_token_is_401_and_recorded(pipe: Pipe) -> None:
    with pytest.raises(Unauthorized):
        await whoami(pipe.ctx, pipe.incoming("GET", "/v1/whoami", agent=None))
    assert pipe.recorder.last(Event.DECISION)["TURRET_STATUS"] == 401


async def test_unrouted_records_and_charges_the_agent(pipe: Pipe) -> None:
    incoming = pipe.incoming("GET", "/v1/nosuch", agent="tight")
    for _ in range(2):
        exc = await unrouted(pipe.ctx, incoming, NotFound("no such endpoint"))
        assert isinstance(exc, NotFound)
        assert pipe.recorder.last(Event.DECISION)["TURRET_AGENT"] == "tight"
    # Over the burst, the limit replaces the refusal: unrouted requests are not free.
    exc = await unrouted(pipe.ctx, incoming, MethodNotAllowed("method not allowed"))
    assert isinstance(exc, TooManyRequests)
    assert pipe.recorder.last(Event.DECISION)["TURRET_STATUS"] == 429
    assert len(pipe.recorder.records) == 3


async def test_unrouted_without_token_is_recorded_and_charged_to_flood_gate(pipe: Pipe) -> None:
    incoming = pipe.incoming("GET", "/v1/nosuch", agent=None)
    for _ in range(2):  # the flood gate's burst
        refusal = await unrouted(pipe.ctx, incoming, NotFound("no such endpoint"))
        assert isinstance(refusal, NotFound)
    assert pipe.recorder.last(Event.DECISION)["TURRET_STATUS"] == 404
    assert "TURRET_AGENT" not in pipe.recorder.last(Event.DECISION)
    flooded = await unrouted(pipe.ctx, incoming, NotFound("no such endpoint"))
    assert isinstance(flooded, Flooded)  # the limit replaces the refusal
    assert pipe.recorder.last(Event.DECISION)["TURRET_STATUS"] == 429
    with pytest.raises(Flooded):  # the gate is shared with every other unauthenticated request
        await whoami(pipe.ctx, incoming)


async def test_flood_refusals_recorded_once_per_window_then_summarised(pipe: Pipe) -> None:
    incoming = pipe.incoming("GET", "/v1/whoami", agent=None)
    refusals = []
    for _ in range(6):
        with pytest.raises(RequestError) as info:
            await whoami(pipe.ctx, incoming)
        refusals.append(info.value)
    assert [type(e) for e in refusals] == [Unauthorized] * 2 + [Flooded] * 4
    assert len(pipe.recorder.records) == 3  # two 401s and the first flood refusal of the window
    record_flood_summary(pipe.ctx)
    assert len(pipe.recorder.records) == 3  # the window is still open
    pipe.clock.now += 1.0
    record_flood_summary(pipe.ctx)
    summary = pipe.recorder.records[-1][2]
    assert summary["TURRET_SUPPRESSED"] == 3 and summary["TURRET_STATUS"] == 429
    record_flood_summary(pipe.ctx, final=True)
    assert len(pipe.recorder.records) == 4  # each is counted once


@pytest.mark.parametrize(
    ("target", "body"),
    [
        ("/v1/proxy/gitea/api/v1/user", b""),
        ("/v1/capabilities/gitea.note", b'{"text": "hi"}'),
    ],
)
async def test_request_keeps_the_runtime_it_started_on(
    pipe: Pipe, creds_dir: Path, target: str, body: bytes
) -> None:
    """A reload while the body arrives: the request finishes on the runtime it started on."""
    started_on = pipe.runtime
    reloaded = make_pipe(creds_dir, pipe.canaries).runtime  # the same config, new agent tokens

    def reload() -> None:
        pipe.ctx.holder.current = reloaded

    io = pipe.exchange(body, on_body=reload)
    run = call if target.startswith("/v1/capabilities/") else proxy
    assert pipe.keep(await run(pipe.ctx, pipe.incoming("POST", target), io)).status == 200
    assert io.runtimes == [started_on]
    with pytest.raises(Unauthorized):  # the next request starts on the new runtime
        await whoami(pipe.ctx, pipe.incoming("GET", "/v1/whoami"))


async def test_pipeline_with_real_auditor_writes_lines_without_secrets(
    pipe: Pipe, tmp_path: Path
) -> None:
    path = tmp_path / "audit.jsonl"
    ctx = replace(pipe.ctx, auditor=Auditor(LineSink.open(str(path))))
    secret = pipe.canaries["gitea-token"]
    with pytest.raises(RequestError):
        await proxy(ctx, pipe.incoming("GET", f"/v1/proxy/gitea/api/v1/{secret}"), pipe.exchange())
    with pytest.raises(RequestError):
        await proxy(
            ctx, pipe.incoming("GET", f"/v1/proxy/gitea/api/v1/repos/me/{secret}"), pipe.exchange()
        )
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["TURRET_DECISION"] for r in records if "TURRET_DECISION" in r] == ["deny", "allow"]
    assert secret not in path.read_text()


# --- decide on a principal ---------------------------------------------------------------------


@dataclass
class Refuses:
    """A restriction that refuses every action outside `service`, noting what it was asked."""

    service: str
    asked: list[Action] = field(default_factory=list)

    def refusal(self, action: Action) -> str | None:
        self.asked.append(action)
        inside = isinstance(action, ProxyAction) and action.service == self.service
        return None if inside else f"outside the lease for {self.service}"


def _proxy(service: str, method: str, path: str) -> ProxyAction:
    return ProxyAction(service, method, canonical_path(path))


def _principal(pipe: Pipe, agent: str, *restrictions: Refuses) -> Principal:
    return Principal(pipe.runtime.config.agents[agent], restrictions=restrictions)


def _decide(pipe: Pipe, principal: Principal, action: Action) -> Decision:
    return decide(principal, action, pipe.runtime.config.services)


@pytest.mark.parametrize(
    ("agent", "action", "result"),
    [
        ("opencode", ("gitea", "GET", "/api/v1/user"), Result.ALLOW),
        ("opencode", ("gitea", "GET", "/api/v1/repos/me/private"), Result.DENY),  # deny rule
        ("opencode", ("gitea", "DELETE", "/api/v1/user"), Result.DENY),  # no grant
        ("rollout", ("gitea", "DELETE", "/api/v1/user"), Result.REPORT),
        ("rollout", ("gitea", "GET", "/api/v1/admin/x"), Result.DENY),  # deny wins in report
        ("rollout", ("nosuch", "GET", "/"), Result.DENY),  # nowhere to send it
    ],
)
def test_decide_results(
    pipe: Pipe, agent: str, action: tuple[str, str, str], result: Result
) -> None:
    decision = _decide(pipe, _principal(pipe, agent), _proxy(*action))
    assert decision.result is result
    assert decision.allowed is (result in (Result.ALLOW, Result.REPORT))
    assert decision.would_deny is (result is Result.REPORT)


def test_decision_approval_is_not_allowed_yet() -> None:
    held = Decision(Result.APPROVAL, "waiting for a person")
    assert not held.allowed and not held.would_deny


@pytest.mark.parametrize("agent", ["opencode", "rollout"])
def test_decide_restriction_turns_allow_into_deny(pipe: Pipe, agent: str) -> None:
    lease = Refuses("apikey")
    decision = _decide(pipe, _principal(pipe, agent, lease), _proxy("gitea", "GET", "/api/v1/user"))
    assert decision == Decision.deny("outside the lease for apikey")
    assert len(lease.asked) == 1


def test_decide_restriction_within_keeps_the_decision(pipe: Pipe) -> None:
    lease = Refuses("gitea")
    action = _proxy("gitea", "GET", "/api/v1/user")
    unrestricted = _decide(pipe, _principal(pipe, "opencode"), action)
    assert _decide(pipe, _principal(pipe, "opencode", lease), action) == unrestricted
    assert lease.asked == [action]


def test_decide_restriction_not_asked_once_denied(pipe: Pipe) -> None:
    lease = Refuses("gitea")
    decision = _decide(
        pipe, _principal(pipe, "opencode", lease), _proxy("gitea", "DELETE", "/api/v1/user")
    )
    assert decision.result is Result.DENY and lease.asked == []


def test_decide_restriction_applies_to_capabilities(pipe: Pipe) -> None:
    capability = pipe.runtime.config.capabilities["gitea.note"]
    lease, second = Refuses("gitea"), Refuses("gitea")
    principal = _principal(pipe, "opencode", lease, second)
    decision = _decide(pipe, principal, CapabilityAction(capability, {"text": "hi"}))
    assert decision.result is Result.DENY and decision.reason == "outside the lease for gitea"
    assert second.asked == []  # the first refusal decides
