"""Peer binding over a real unix socket: the peer in every record, a bound agent's tokens
refused from other callers and over TCP with one answer, derived tokens bound like their agent,
`require_contained` failing closed where the caller's unit is unknown."""

from __future__ import annotations

import os

import pytest

from tests.admin.conftest import Served
from tests.conftest import Upstream
from tests.identity.conftest import Serve, as_user, mint, open_to_everyone

NOBODY = 65534
OWN = os.getuid()
OTHER = OWN + 4242
needs_root = pytest.mark.skipif(OWN != 0, reason="setuid() to another user needs root")


def last(served: Served, **match: str) -> dict[str, str]:
    records = [r for r in served.audit() if all(r.get(k) == v for k, v in match.items())]
    return records[-1]


def assert_mismatch(status: int, answer: object) -> None:
    assert status == 401
    assert isinstance(answer, dict)
    assert answer["error"]["code"] == "peer_mismatch"
    assert answer["error"]["message"] == "this token is not valid from this caller"


async def test_bind_unbound_agent_records_the_unix_peer_and_none_over_tcp(serve: Serve) -> None:
    served = await serve()
    status, _ = await served.agent("/v1/whoami")
    assert status == 200
    record = last(served, TURRET_EVENT="decision")
    assert record["TURRET_PEER_UID"] == str(OWN)
    assert record["TURRET_PEER_PID"] == str(os.getpid())
    assert record["TURRET_PEER_GID"] == str(os.getgid())
    assert "TURRET_CONTAINMENT" not in record  # unbound, containment not asked for
    status, _ = await served.agent("/v1/whoami", tcp=True)
    assert status == 200
    assert "TURRET_PEER_UID" not in last(served, TURRET_EVENT="decision")


async def test_bind_peer_recorded_on_refusals_too(serve: Serve) -> None:
    served = await serve()
    status, _ = await served.agent("/v1/whoami", token="tok_not-a-token")
    assert status == 401
    assert last(served, TURRET_EVENT="decision")["TURRET_PEER_UID"] == str(OWN)
    status, _ = await served.agent("/v1/proxy/gitea/api/v1/admin")
    assert status == 403
    assert last(served, TURRET_EVENT="decision")["TURRET_PEER_UID"] == str(OWN)


async def test_bind_to_own_uid_serves_unix_and_refuses_tcp(serve: Serve) -> None:
    served = await serve(f"    bind: {{uid: {OWN}}}\n")
    status, _ = await served.agent("/v1/proxy/gitea/api/v1/user")
    assert status == 200
    assert last(served, TURRET_EVENT="decision")["TURRET_DECISION"] == "allow"
    status, answer = await served.agent("/v1/proxy/gitea/api/v1/user", tcp=True)
    assert_mismatch(status, answer)
    record = last(served, TURRET_EVENT="decision")
    assert record["TURRET_DECISION"] == "deny" and record["TURRET_STATUS"] == "401"
    assert record["TURRET_AGENT"] == "opencode"
    assert record["TURRET_REASON"] == "a bound agent's token over TCP (no peer)"
    # the unbound agent on the same gateway still works over TCP
    status, _ = await served.agent(
        "/v1/proxy/gitea/api/v1/user", token=served.other_token, tcp=True
    )
    assert status == 200


@pytest.mark.parametrize(
    "bind",
    [
        f"{{uid: {OTHER}}}",
        f"[{{uid: {OTHER}}}, {{uid: {OTHER + 1}}}]",
        "{unit: opencode.service}",  # no unit resolves here: nothing matches a unit binding
        f"[{{unit: opencode.service}}, {{uid: {OTHER}}}]",
    ],
)
async def test_bind_elsewhere_refuses_this_peer_on_every_endpoint(
    serve: Serve, upstream: Upstream, bind: str
) -> None:
    served = await serve(f"    bind: {bind}\n")
    for path in ("/v1/whoami", "/v1/proxy/gitea/api/v1/user", "/v1/capabilities"):
        status, answer = await served.agent(path)
        assert_mismatch(status, answer)
        record = last(served, TURRET_EVENT="decision")
        reason = f"peer uid={OWN} unit=- is not bound to this agent"
        if "unit" in bind:
            reason += " (no unit could be read: in none, or hidden by ProtectProc=)"
        assert record["TURRET_REASON"] == reason
        assert record["TURRET_PEER_UID"] == str(OWN)
    assert upstream.received == []  # nothing was forwarded


async def test_bind_of_a_group_applies_to_its_agents(serve: Serve) -> None:
    served = await serve(rest=f"groups:\n  llm:\n    agents: [open*]\n    bind: {{uid: {OTHER}}}\n")
    assert_mismatch(*await served.agent("/v1/whoami"))
    assert (await served.agent("/v1/whoami", token=served.other_token))[0] == 200


async def test_bind_agent_and_group_bindings_must_both_allow(serve: Serve) -> None:
    served = await serve(
        f"    bind: {{uid: {OWN}}}\n",
        f"groups:\n  llm:\n    agents: [opencode]\n    bind: [{{uid: {OWN}}}, {{uid: {OTHER}}}]\n",
    )
    assert (await served.agent("/v1/whoami"))[0] == 200
    assert_mismatch(*await served.agent("/v1/whoami", tcp=True))


async def test_bind_derived_tokens_inherit_the_binding(serve: Serve) -> None:
    served = await serve(f"    bind: {{uid: {OWN}}}\n")
    assert_mismatch(401, await mint(served, served.token, tcp=True))  # no minting over TCP
    child = (await mint(served, served.token))["token"]
    grandchild = (await mint(served, child))["token"]
    for token in (child, grandchild):
        assert (await served.agent("/v1/whoami", token=token))[0] == 200
        assert_mismatch(*await served.agent("/v1/whoami", token=token, tcp=True))
        record = last(served, TURRET_EVENT="decision")
        assert record["TURRET_TOKEN_ID"].startswith("tok_")


async def test_bind_mismatch_says_nothing_about_revoked_or_expired_tokens(serve: Serve) -> None:
    served = await serve(f"    bind: {{uid: {OWN}}}\n")
    child = await mint(served, served.token)
    status, _ = await served.agent(f"/v1/tokens/{child['id']}", method="DELETE")
    assert status == 200
    # the rightful caller is told it is revoked; any other caller only that it is not its token
    status, answer = await served.agent("/v1/whoami", token=child["token"])
    assert status == 401 and answer["error"]["code"] == "revoked"
    assert_mismatch(*await served.agent("/v1/whoami", token=child["token"], tcp=True))
    # the same for the agent's own token once the operator revoked the agent
    assert (await served.admin("POST", "/v1/admin/agents/opencode/revoke", {}))[0] == 200
    status, answer = await served.agent("/v1/whoami")
    assert status == 401 and answer["error"]["code"] == "revoked"
    assert_mismatch(*await served.agent("/v1/whoami", tcp=True))


async def test_bind_mismatch_is_charged_to_the_flood_gate(serve: Serve) -> None:
    served = await serve(
        f"    bind: {{uid: {OTHER}}}\n",
        "limits:\n  unauthenticated: {requests_per_second: 0.1, burst: 2}\n",
    )
    codes = [(await served.agent("/v1/whoami"))[0] for _ in range(4)]
    assert codes[:2] == [401, 401] and 429 in codes[2:]
    # the caller that really is the agent is not slowed by it: its own rate is untouched
    assert (await served.agent("/v1/whoami", token=served.other_token))[0] == 200


async def test_bind_require_contained_refuses_this_test_process(serve: Serve) -> None:
    # The test runs in no unit, with its host's network and no NoNewPrivs: the process's own
    # facts say it is not contained.
    served = await serve("    require_contained: true\n")
    status, answer = await served.agent("/v1/whoami")
    assert status == 403 and answer["error"]["code"] == "not_contained"
    assert answer["error"]["message"].startswith("the calling unit (none) is not contained: ")
    record = last(served, TURRET_EVENT="decision")
    assert record["TURRET_CONTAINMENT"] == "uncontained" and record["TURRET_STATUS"] == "403"
    gaps = record["TURRET_CONTAINMENT_GAPS"].split(",")
    assert answer["error"]["message"].endswith(gaps[0])
    assert ("User" in gaps) is (OWN == 0)
    # over TCP nothing is known of the caller: refused too
    status, answer = await served.agent("/v1/whoami", tcp=True)
    assert status == 403 and answer["error"]["code"] == "not_contained"
    assert answer["error"]["message"] == "the containment of the calling unit (none) is not known"
    assert last(served, TURRET_EVENT="decision")["TURRET_CONTAINMENT"] == "unknown"


async def test_bind_unit_binding_records_containment_even_when_not_required(serve: Serve) -> None:
    served = await serve(f"    bind: [{{uid: {OWN}}}, {{unit: opencode.service}}]\n")
    assert (await served.agent("/v1/whoami"))[0] == 200
    # the process's own facts are read for a bound agent too: known, and not contained
    assert last(served, TURRET_EVENT="decision")["TURRET_CONTAINMENT"] == "uncontained"


@needs_root
async def test_bind_another_uid_is_refused_with_the_same_answer_as_tcp(serve: Serve) -> None:
    served = await serve(f"    bind: {{uid: {OWN}}}\n")
    open_to_everyone(served)
    status, from_nobody = await as_user(NOBODY, served.agents_unix, served.token)
    served.seen.append(repr(from_nobody))
    assert_mismatch(status, from_nobody)
    record = last(served, TURRET_EVENT="decision")
    assert record["TURRET_PEER_UID"] == str(NOBODY)
    assert record["TURRET_REASON"] == (
        f"peer uid={NOBODY} unit=- is not bound to this agent"
        " (uid 65534: does Turret run with PrivateUsers=yes?)"
    )
    _, over_tcp = await served.agent("/v1/whoami", tcp=True)
    # one answer whatever did not match: only the request id differs
    for answer in (from_nobody, over_tcp):
        answer["error"].pop("request_id")
    assert from_nobody == over_tcp
    # and the agent bound to nobody is served to nobody
    status, _ = await as_user(NOBODY, served.agents_unix, served.other_token)
    assert status == 200


async def test_bind_mismatch_says_nothing_about_an_expired_agent_token(serve: Serve) -> None:
    served = await serve(f"    bind: {{uid: {OWN}}}\n    expires: 2001-01-01\n")
    status, answer = await served.agent("/v1/whoami")
    assert status == 401 and answer["error"]["code"] == "token_expired"
    assert_mismatch(*await served.agent("/v1/whoami", tcp=True))


async def test_bind_mismatch_on_an_unknown_endpoint_is_the_unknown_endpoint(serve: Serve) -> None:
    # an unrouted request is refused as such: the wrong peer learns nothing more from it
    served = await serve(f"    bind: {{uid: {OTHER}}}\n")
    status, answer = await served.agent("/v1/nowhere")
    assert status == 404 and answer["error"]["code"] == "not_found"
    assert last(served, TURRET_EVENT="decision")["TURRET_PEER_UID"] == str(OWN)
