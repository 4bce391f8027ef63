"""The notification of a failed mint (`alerts:`): sent through the configured capability as
Turret itself, with its own audit records, at most once per provider per `every` seconds."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import Upstream
from tests.gateway import Built, Canaries, build_gateway
from tests.providers.fake_github import FakeGitHub, new_key, serve
from tests.providers.github import PEM_CREDENTIAL, github_config
from tests.providers.minters import FakeTime
from turret.config import load_config
from turret.errors import ConfigError
from turret.web.alerts import ALERTS

ALERTS_SECTION = """alerts:
  capability: ntfy.publish
  params: {topic: turret-alerts, message: "minting failing: {provider} for {service}: {cause}"}
  every: 600
"""


def with_ntfy(text: str, upstream: str, alerts: str = ALERTS_SECTION) -> str:
    ntfy = f"  ntfy:\n    kind: ntfy\n    url: {upstream}\n    auth: {{bearer: ntfy-token}}\n"
    return text.replace("services:\n", "services:\n" + ntfy, 1) + alerts


async def failing_call(built: Built, token: str) -> None:
    """A call whose credential cannot be minted, and the alert it may cause, sent."""
    resp = await built.client.post(
        "/v1/capabilities/gh.repo",
        json={"repo": "alpha"},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert resp.status == 503
    await built.client.app[ALERTS].settled()


async def test_minting_alert_goes_out_through_the_capability_rate_limited(
    upstream: Upstream, leak_check: Canaries, tmp_path: Path, creds_dir: Path
) -> None:
    time = FakeTime()
    pem, public = new_key()
    (creds_dir / PEM_CREDENTIAL).write_text(pem)
    fake = FakeGitHub(public, lambda: time.wall, mode="500")
    leak_check.watch([pem])
    async for server in serve(fake):
        api = str(server.make_url("")).rstrip("/")
        token = leak_check.mint()
        built = await build_gateway(
            with_ntfy(github_config(api, token), upstream.url),
            creds=leak_check,
            audit_path=tmp_path / "audit.jsonl",
            credentials_dir=creds_dir,
            hooks=time.hooks(),
        )
        alerter = built.client.app[ALERTS]
        alerter.clock = lambda: time.mono
        await failing_call(built, token)
        (sent,) = upstream.received
        assert sent.headers["Authorization"] == f"Bearer {leak_check.credentials['ntfy-token']}"
        assert json.loads(sent.body) == {
            "topic": "turret-alerts",
            "message": "minting failing: gh-app for gh: token request answered HTTP 500",
        }
        await failing_call(built, token)  # within 600 s of the first: no second alert
        assert len(upstream.received) == 1
        time.advance(600)
        await failing_call(built, token)
        assert len(upstream.received) == 2
        records = built.audit()
        alerts = [r for r in records if r.get("TURRET_AGENT") == "turret"]
        assert [r["TURRET_EVENT"] for r in alerts] == ["decision", "outcome"] * 2
        assert {r["TURRET_CAPABILITY"] for r in alerts} == {"ntfy.publish"}
        assert alerts[1]["TURRET_REASON"] == "alert sent"
        assert len([r for r in records if r["TURRET_EVENT"] == "credential_mint_failed"]) == 3


@pytest.mark.parametrize(
    ("section", "where"),
    [
        ("alerts:\n  capability: ntfy.nothing\n", "alerts.capability"),
        ("alerts:\n  capability: ntfy.publish\n  params: {colour: red}\n", "alerts.params.colour"),
        (
            "alerts:\n  capability: ntfy.publish\n  params: {message: '{token}'}\n",
            "alerts.params.message",
        ),
        ("alerts:\n  capability: ntfy.publish\n  every: 0\n", "alerts.every"),
        ("alerts:\n  params: {}\n", "alerts"),
    ],
)
def test_minting_alert_config_is_checked(section: str, where: str) -> None:
    text = with_ntfy(github_config("https://api.github.com", "t"), "https://ntfy.sh", section)
    with pytest.raises(ConfigError) as caught:
        load_config(text)
    assert where in [i.path for i in caught.value.issues]
