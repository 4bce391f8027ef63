"""`GET /metrics` against a whole Turret: on the admin socket only, counters that move with
requests, gauges from the state store, and no label an agent can make up."""

from __future__ import annotations

import secrets
import time

import pytest

from tests.admin.conftest import Served
from tests.conftest import Upstream
from tests.ops.conftest import scrape, series
from turret.state import NewToken

USER = "/v1/proxy/gitea/api/v1/user"
CONFIG_NAMES = {"opencode", "other", "gitea", "basic", "apikey", "q", "-", ""}


def value(text: str, name: str, **labels: str) -> float:
    """The sample `name{labels}`, 0 when absent."""
    return series(text).get((name, tuple(sorted(labels.items()))), 0.0)


async def test_metrics_scrape_counts_requests_by_agent_service_and_decision(
    served: Served,
) -> None:
    status, content_type, before = await scrape(served)
    assert status == 200 and content_type.startswith("text/plain; version=0.0.4")
    assert (await served.agent(USER))[0] == 200
    assert (await served.agent(USER))[0] == 200
    assert (await served.agent("/v1/proxy/gitea/api/v1/admin"))[0] == 403
    _, _, text = await scrape(served)
    allow = {"agent": "opencode", "service": "gitea", "capability": "-", "decision": "allow"}
    deny = {**allow, "decision": "deny"}
    assert value(text, "turret_requests_total", **allow) == 2
    assert value(text, "turret_requests_total", **deny) == 1
    assert value(before, "turret_requests_total", **allow) == 0
    # Two allowed requests reached the upstream: two durations observed for gitea.
    assert value(text, "turret_request_duration_seconds_count", service="gitea") >= 2
    assert value(text, "turret_request_duration_seconds_bucket", service="gitea", le="+Inf") >= 2
    assert value(text, "turret_audit_failures_total") == 0
    assert value(text, "turret_state_store") == 1 and value(text, "turret_sealed") == 0


@pytest.mark.parametrize("tcp", [False, True], ids=["unix", "tcp"])
async def test_metrics_never_served_on_the_agents_listeners(served: Served, *, tcp: bool) -> None:
    for token in (None, ""):  # with a valid agent token, and without one
        status, doc = await served.agent("/metrics", token=token, tcp=tcp)
        assert status == 404, doc
        assert "turret_requests_total" not in str(doc)
    # The agents' unix socket is not the admin socket, even for a scrape.
    status, _, text = await scrape(served, served.agents_unix)
    assert status == 404 and "turret_requests_total" not in text


async def test_metrics_unknown_names_from_agents_create_no_label_series(served: Served) -> None:
    made_up = [f"svc{secrets.token_hex(4)}" for _ in range(5)]
    for name in made_up:
        await served.agent(f"/v1/proxy/{name}/x")  # an agent's token: denied, unknown service
        await served.agent(f"/v1/proxy/{name}/x", token="")  # no token
        await served.agent(f"/v1/capabilities/{name}.call", method="POST")  # no such capability
        await served.agent(f"/v1/proxy/%2e%2e{name}/x")  # escaped, never decoded into a name
    await served.agent("/v1/proxy/gitea%2fx/y")
    _, _, text = await scrape(served)
    labels = {v for (_, pairs) in series(text) for k, v in pairs if k != "le"}
    assert served.gateway is not None
    # Credential names label the key-age gauge: the config's names too, never an agent's.
    credentials = set(served.gateway.config.credential_policy)
    allowed = CONFIG_NAMES | credentials | {"allow", "deny", "connection", "timeout"}
    assert labels <= allowed, labels
    assert not any(name in text for name in made_up)
    # The in-memory counters behind them are folded too: no growth per made-up name.
    targets = {t for (_, t, _) in served.gateway.counters().decisions}
    assert targets <= CONFIG_NAMES


async def test_metrics_gauges_follow_the_state_store(served: Served) -> None:
    assert served.gateway is not None and served.gateway.state is not None
    state = served.gateway.state
    now = time.time()
    state.tokens.insert(
        NewToken("tok_" + "1" * 16, "a" * 64, "opencode", None, "{}", now, now + 600, None, False)
    )
    state.credentials.observe("gitea-token", state.fingerprint_key.fingerprint(b"v1"), now - 3600)
    assert (await served.admin("POST", "/v1/admin/agents/other/revoke"))[0] == 200
    _, _, text = await scrape(served)
    assert value(text, "turret_revoked_agents") == 1
    assert value(text, "turret_derived_tokens_in_force") == 1
    age = value(text, "turret_credential_age_seconds", credential="gitea-token")
    assert 3600 <= age < 3600 + 60
    assert (await served.admin("POST", "/v1/admin/seal"))[0] == 200
    _, _, sealed = await scrape(served)
    assert value(sealed, "turret_sealed") == 1
    assert value(sealed, "turret_derived_tokens_in_force") == 1  # a seal alone revokes none
    assert (await served.admin("POST", "/v1/admin/killswitch"))[0] == 200
    _, _, killed = await scrape(served)
    assert value(killed, "turret_derived_tokens_in_force") == 0


async def test_metrics_upstream_errors_by_kind(served: Served, upstream: Upstream) -> None:
    # The fake upstream answers 502 itself: a forwarded answer, not an upstream error.
    assert (await served.agent("/v1/proxy/gitea/status/502"))[0] == 502
    _, _, text = await scrape(served)
    assert value(text, "turret_upstream_errors_total", service="gitea", kind="connection") == 0
    await upstream.server.close()  # now nothing listens there: connection refused
    assert (await served.agent(USER))[0] == 502
    _, _, down = await scrape(served)
    assert value(down, "turret_upstream_errors_total", service="gitea", kind="connection") == 1
