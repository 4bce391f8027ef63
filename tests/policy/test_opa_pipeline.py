"""The OPA step in the sans-I/O pipeline: where it runs, fail closed without an oracle, report
mode, and what the decision record says before anything is forwarded."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.pipeline.conftest import Pipe, make_pipe, pipe_config
from turret.config import load_config
from turret.errors import PolicyDenied, RequestError
from turret.opa import OpaSettings, Verdict
from turret.pipeline.calls import call
from turret.pipeline.proxy import proxy
from turret.providers.build import build_runtime
from turret.records import Event

USER = "/v1/proxy/gitea/api/v1/user"
POLICY = "policy:\n  opa: {url: 'http://127.0.0.1:8181', path: turret/allow}\n"


@dataclass
class Oracle:
    """The web layer's side of the step, as plain Python: a verdict to give, the queries."""

    answer: Verdict = field(default_factory=lambda: Verdict(True, "opa_allowed"))
    queries: list[dict[str, Any]] = field(default_factory=list)

    async def ask(self, settings: OpaSettings, query: bytes) -> Verdict:
        self.queries.append(json.loads(query)["input"])
        return self.answer


def with_opa(pipe: Pipe, creds_dir: Path, oracle: Oracle | None) -> Pipe:
    config = load_config(pipe_config(pipe.tokens) + POLICY)
    pipe.ctx.holder.current = build_runtime(config, str(creds_dir))
    return dataclasses.replace(pipe, ctx=dataclasses.replace(pipe.ctx, oracle=oracle))


@pytest.fixture
def opa_pipe(creds_dir: Path, canaries: dict[str, str]) -> Pipe:
    return make_pipe(creds_dir, canaries)


async def refused(pipe: Pipe, step: Coroutine[Any, Any, object]) -> RequestError:
    with pytest.raises(RequestError) as info:
        await step
    return pipe.refused(info.value)


async def test_opa_step_without_an_oracle_fails_closed(opa_pipe: Pipe, creds_dir: Path) -> None:
    pipe = with_opa(opa_pipe, creds_dir, None)
    io = pipe.exchange()
    exc = await refused(pipe, proxy(pipe.ctx, pipe.incoming("GET", USER), io))
    assert isinstance(exc, PolicyDenied) and "opa_unavailable" in exc.message
    assert io.forwarded == [] and io.body_calls == 0
    assert pipe.recorder.last(Event.DECISION)["TURRET_OPA"] == "opa_unavailable"


async def test_opa_step_runs_after_turret_allows_and_before_the_record(
    opa_pipe: Pipe, creds_dir: Path
) -> None:
    oracle = Oracle()
    pipe = with_opa(opa_pipe, creds_dir, oracle)
    io = pipe.exchange()
    pipe.keep(await proxy(pipe.ctx, pipe.incoming("GET", USER), io))
    assert io.records_at_forward == [[Event.DECISION]]
    assert pipe.recorder.last(Event.DECISION)["TURRET_OPA"] == "opa_allowed"
    assert len(oracle.queries) == 1
    # A request Turret denies is never put to OPA.
    await refused(pipe, proxy(pipe.ctx, pipe.incoming("GET", "/v1/proxy/gitea/admin"), io))
    assert len(oracle.queries) == 1


async def test_opa_denial_is_enforced_for_a_report_mode_agent(
    opa_pipe: Pipe, creds_dir: Path
) -> None:
    oracle = Oracle(Verdict(False, "opa_denied", "no"))
    pipe = with_opa(opa_pipe, creds_dir, oracle)
    io = pipe.exchange()
    # `rollout` is in report mode: Turret's own policy would let this through as would-deny.
    target = "/v1/proxy/gitea/api/v1/repos/me/x"  # no grant: report mode lets it pass
    exc = await refused(pipe, proxy(pipe.ctx, pipe.incoming("GET", target, agent="rollout"), io))
    assert isinstance(exc, PolicyDenied) and io.forwarded == []
    assert oracle.queries[0]["agent"] == "rollout"


async def test_opa_denies_a_call_before_its_request_is_built(
    opa_pipe: Pipe, creds_dir: Path
) -> None:
    oracle = Oracle(Verdict(False, "opa_denied", "not on fridays"))
    pipe = with_opa(opa_pipe, creds_dir, oracle)
    io = pipe.exchange(b'{"repo": "turret", "index": 3}')
    target = "/v1/capabilities/gitea.close_issue"
    exc = await refused(pipe, call(pipe.ctx, pipe.incoming("POST", target), io))
    assert isinstance(exc, PolicyDenied) and exc.status == 403 and exc.code == "policy_denied"
    assert "fridays" not in exc.message and io.forwarded == []
    assert oracle.queries == [
        {
            "agent": "opencode", "token_id": None, "kind": "capability",
            "capability": "gitea.close_issue", "params": {"repo": "turret", "index": 3},
            "service": "gitea", "method": None, "path": None, "time": oracle.queries[0]["time"],
        }
    ]  # fmt: skip
    decision = pipe.recorder.last(Event.DECISION)
    assert decision["TURRET_DECISION"] == "deny" and "fridays" in str(decision["TURRET_REASON"])


async def test_opa_step_is_skipped_without_policy_opa(opa_pipe: Pipe) -> None:
    oracle = Oracle(Verdict(False, "opa_denied"))
    pipe = dataclasses.replace(opa_pipe, ctx=dataclasses.replace(opa_pipe.ctx, oracle=oracle))
    pipe.keep(await proxy(pipe.ctx, pipe.incoming("GET", USER), pipe.exchange()))
    assert oracle.queries == []
    assert "TURRET_OPA" not in pipe.recorder.last(Event.DECISION)
