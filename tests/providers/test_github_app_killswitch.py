"""The killswitch and the alarm with a whole Turret (`server.Gateway`, as `turret serve` runs
it): the killswitch revokes every outstanding installation token at the fake GitHub (it sees
each DELETE), `turret rotate gh-app` revokes them too and the next call mints anew, and a
failing provider is named in STATUS= and counted until a mint works."""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.admin.conftest import Served, free_port
from tests.gateway import Canaries
from tests.providers.fake_github import FakeGitHub, new_key, serve
from tests.providers.github import PEM_CREDENTIAL, github_config
from tests.providers.minters import FakeTime
from turret.providers.aged import unwrapped
from turret.providers.minting import MintingProvider
from turret.server import ServeOptions


@pytest.fixture
async def served(
    leak_check: Canaries, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[Served, FakeGitHub]]:
    monkeypatch.delenv("STATE_DIRECTORY", raising=False)
    monkeypatch.delenv("LISTEN_FDS", raising=False)
    pem, public = new_key()
    fake = FakeGitHub(public, time.time)
    leak_check.watch([pem])
    leak_check.watch(fake.tokens)
    creds = leak_check.write(tmp_path / "credentials")
    (creds / PEM_CREDENTIAL).write_text(pem)
    sockets = Path(tempfile.mkdtemp(prefix="turret-gh-"))
    agents_unix, admin_socket = str(sockets / "agents.sock"), str(sockets / "admin.sock")
    agents_tcp = f"127.0.0.1:{free_port()}"
    token = leak_check.mint()
    async for server in serve(fake):
        api = str(server.make_url("")).rstrip("/")
        config = tmp_path / "turret.yaml"
        config.write_text(
            github_config(api, token)
            + f"listen: [unix:{agents_unix}, {agents_tcp}]\nadmin:\n  socket: {admin_socket}\n"
        )
        state = tmp_path / "state"
        state.mkdir(mode=0o700)
        options = ServeOptions(str(config), str(creds), shutdown_timeout=5, state_dir=str(state))
        s = Served(
            options, tmp_path / "audit.jsonl", token, token, leak_check, admin_socket,
            agents_unix, agents_tcp,
        )  # fmt: skip
        await s.start()
        yield s, fake
        await s.finish(leak_check)  # the sockets' directory too


async def call(s: Served, repo: str) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession(connector=aiohttp.UnixConnector(s.agents_unix)) as session,
        session.post(
            "http://turret/v1/capabilities/gh.repo",
            json={"repo": repo},
            headers={"Authorization": f"Bearer {s.token}"},
        ) as resp,
    ):
        text = await resp.text()
        s.seen.append(text)
        return resp.status, await resp.json()


async def test_github_app_killswitch_revokes_every_outstanding_token(
    served: tuple[Served, FakeGitHub],
) -> None:
    s, fake = served
    for repo in ("alpha", "beta", "alpha"):
        assert (await call(s, repo))[0] == 200
    assert len(fake.issued) == 2
    status, _ = await s.admin("POST", "/v1/admin/killswitch", {"reason": "drill"})
    assert status == 200
    assert fake.deletes == 2
    assert all(i.revoked for i in fake.issued)
    (revoked,) = [r for r in s.audit() if r["TURRET_EVENT"] == "credential_revoked"]
    assert revoked["TURRET_COUNT"] == "2"
    assert revoked["TURRET_PROVIDER"] == "gh-app"
    assert (await call(s, "alpha"))[0] == 503  # sealed
    assert (await s.admin("POST", "/v1/admin/unseal"))[0] == 200
    assert (await call(s, "alpha"))[0] == 200  # a fresh token, not a revoked one
    assert len(fake.issued) == 3


async def test_github_app_failing_provider_is_named_in_status(
    served: tuple[Served, FakeGitHub],
) -> None:
    s, fake = served
    assert s.gateway is not None
    # A served Turret wraps each provider for key age; the minting one is inside.
    provider = unwrapped(s.gateway.holder.current.providers["gh"])
    assert isinstance(provider, MintingProvider)
    provider.hooks = FakeTime(wall=time.time()).hooks()  # backoff without sleeping
    fake.mode = "500"
    status, body = await call(s, "alpha")
    assert (status, body["error"]["code"]) == (503, "credential_unavailable")
    assert "CREDENTIAL MINTING FAILING: gh-app" in s.gateway.status()
    assert s.gateway.counters().mint_failures["gh-app"] == 1
    fake.mode = "ok"
    assert (await call(s, "alpha"))[0] == 200
    assert "FAILING" not in s.gateway.status()


async def test_github_app_stopping_revokes_every_outstanding_token(
    served: tuple[Served, FakeGitHub],
) -> None:
    s, fake = served
    for repo in ("alpha", "beta"):
        assert (await call(s, repo))[0] == 200
    await s.stop()
    assert fake.deletes == 2  # minted credentials do not outlive the Turret that holds them
    (revoked,) = [r for r in s.audit() if r["TURRET_EVENT"] == "credential_revoked"]
    assert revoked["TURRET_COUNT"] == "2"


async def test_turret_rotate_a_minting_provider_revokes_and_mints_anew(
    served: tuple[Served, FakeGitHub],
) -> None:
    """`turret rotate PROVIDER`: a provider that mints rotates by itself. Every token it handed
    out is revoked at GitHub, the next call gets a new one, and each service's rotation is on
    record with the operator's uid."""
    s, fake = served
    for repo in ("alpha", "beta"):
        assert (await call(s, repo))[0] == 200
    first = list(fake.issued)
    code, out, err = await s.cli("rotate", "gh-app")
    assert code == 0, err
    assert "provider gh-app: mints its credentials, so Turret rotated it itself" in out
    assert "service gh: 2 outstanding credentials revoked" in out
    assert "service gh-echo: 0 outstanding credentials revoked" in out
    assert fake.deletes == 2 and all(i.revoked for i in first)
    rotated = [r for r in s.audit() if r["TURRET_EVENT"] == "credential_rotated"]
    assert sorted(r["TURRET_SERVICE"] for r in rotated) == ["gh", "gh-echo"]
    assert {r["TURRET_OPERATOR_UID"] for r in rotated} == {str(os.getuid())}
    assert {r["TURRET_PROVIDER"] for r in rotated} == {"gh-app"}
    (revoked,) = [r for r in s.audit() if r["TURRET_EVENT"] == "credential_revoked"]
    assert revoked["TURRET_COUNT"] == "2"
    assert (await call(s, "alpha"))[0] == 200  # not sealed: only the credentials changed
    assert len(fake.issued) == 3 and not fake.issued[-1].revoked


async def test_turret_rotate_json_and_names_that_rotate_nothing(
    served: tuple[Served, FakeGitHub],
) -> None:
    s, fake = served
    assert (await call(s, "alpha"))[0] == 200
    code, out, err = await s.cli("rotate", "gh-app", "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["provider"] == "gh-app" and doc["ok"] is True
    assert doc["services"] == [
        {"service": "gh", "revoked": 1, "forgotten": 0, "revoke_failures": []},
        {"service": "gh-echo", "revoked": 0, "forgotten": 0, "revoke_failures": []},
    ]
    assert [c["service"] for c in doc["checks"]] == ["gh", "gh-echo"]
    # Neither a credential nor a minting provider; nor the name of a service.
    for name in ("no-such-thing", "gh"):
        code, out, err = await s.cli("rotate", name)
        assert code == 1
        assert f"no service uses a provider {name!r} that mints its credentials" in err
    # A bad name is refused by the server whoever asks.
    status, body = await s.admin("POST", "/v1/admin/providers/..%2Fx/rotate")
    assert (status, body["error"]["code"]) == (400, "bad_request")
    assert fake.deletes == 1
