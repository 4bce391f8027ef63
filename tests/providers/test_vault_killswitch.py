"""The killswitch with a whole Turret (`server.Gateway`, as `turret serve` runs it) minting
dynamic credentials from the fake Vault: `POST /v1/admin/killswitch` revokes every outstanding
lease with `sys/leases/revoke` and then Turret's AppRole token (the fake Vault sees each), and
after unseal a new login and a new lease are used, never a revoked one; `turret rotate
vault-main` revokes the leases alone and the next request gets a new one."""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestServer

from tests.admin.conftest import Served, free_port
from tests.conftest import Upstream
from tests.gateway import Canaries
from tests.providers.fakevault import FakeVault
from turret.auth import token_sha256
from turret.server import ServeOptions


def vault_config(vault_url: str, upstream_url: str, token: str) -> str:
    return f"""
providers:
  vault-main:
    type: vault
    url: {vault_url}
    role_id: vault-role-id
    secret_id: vault-secret-id
services:
  consul:
    url: {upstream_url}
    auth: {{provider: vault-main, dynamic: {{mount: consul, role: deploy, field: token}}}}
  nomad:
    url: {upstream_url}
    auth: {{provider: vault-main, dynamic: {{mount: nomad, role: ops, field: token}}}}
agents:
  bot:
    token_sha256: {token_sha256(token)}
    proxy:
      - {{service: consul, methods: [GET], paths: ["/v1/**"]}}
      - {{service: nomad, methods: [GET], paths: ["/v1/**"]}}
"""


@pytest.fixture
async def served(
    leak_check: Canaries, tmp_path: Path, upstream: Upstream, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[Served, FakeVault]]:
    monkeypatch.delenv("STATE_DIRECTORY", raising=False)
    monkeypatch.delenv("LISTEN_FDS", raising=False)
    fake = FakeVault(time.time)
    leak_check.watch(fake.issued)
    leak_check.watch([fake.secret_id])
    server = TestServer(fake.app(), host="127.0.0.1")
    await server.start_server()
    creds = leak_check.write(tmp_path / "credentials")
    (creds / "vault-role-id").write_text(fake.role_id)
    (creds / "vault-secret-id").write_text(fake.secret_id)
    sockets = Path(tempfile.mkdtemp(prefix="turret-vault-"))
    agents_unix, admin_socket = str(sockets / "agents.sock"), str(sockets / "admin.sock")
    agents_tcp = f"127.0.0.1:{free_port()}"
    token = leak_check.mint()
    config = tmp_path / "turret.yaml"
    vault_url = str(server.make_url("")).rstrip("/")
    config.write_text(
        vault_config(vault_url, upstream.url, token)
        + f"listen: [unix:{agents_unix}, {agents_tcp}]\nadmin:\n  socket: {admin_socket}\n"
    )
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    options = ServeOptions(str(config), str(creds), shutdown_timeout=5, state_dir=str(state))
    s = Served(
        options, tmp_path / "audit.jsonl", token, token, leak_check, admin_socket, agents_unix,
        agents_tcp,
    )  # fmt: skip
    await s.start()
    try:
        yield s, fake
    finally:
        await s.finish(leak_check)  # the sockets' directory too
        await server.close()


async def test_vault_killswitch_revokes_every_lease_then_the_token(
    served: tuple[Served, FakeVault], upstream: Upstream
) -> None:
    s, fake = served
    for path in ("/v1/proxy/consul/v1/kv", "/v1/proxy/nomad/v1/jobs", "/v1/proxy/consul/v1/kv"):
        assert (await s.agent(path))[0] == 200
    assert len(fake.leases) == 2
    logins = sorted(fake.tokens)  # one AppRole login per service: each its own Vault token
    assert len(logins) == 2
    status, _ = await s.admin("POST", "/v1/admin/killswitch", {"reason": "drill"})
    assert status == 200
    assert all(lease.revoked for lease in fake.leases.values())
    revokes = [c for c in fake.calls if c.path == "/v1/sys/leases/revoke"]
    assert len(revokes) == 2
    assert sorted(fake.revoked_tokens) == logins and fake.tokens == {}
    revoked = [r for r in s.audit() if r["TURRET_EVENT"] == "credential_revoked"]
    assert sorted(r["TURRET_SERVICE"] for r in revoked) == ["consul", "nomad"]
    assert (await s.agent("/v1/proxy/consul/v1/kv"))[0] == 503  # sealed
    assert (await s.admin("POST", "/v1/admin/unseal"))[0] == 200
    assert (await s.agent("/v1/proxy/consul/v1/kv"))[0] == 200
    assert len(fake.leases) == 3 and len(fake.tokens) == 1  # a new login, a new lease
    newest = list(fake.leases.values())[-1]
    assert upstream.received[-1].headers["Authorization"] == "Bearer " + newest.data["token"]


async def test_turret_rotate_vault_revokes_every_lease_and_the_next_request_gets_a_new_one(
    served: tuple[Served, FakeVault], upstream: Upstream
) -> None:
    """`turret rotate vault-main`: each service's outstanding lease is revoked with
    `sys/leases/revoke`, then Turret's AppRole token; Turret is not sealed, and the next
    request logs in anew and goes out with a new lease's credential, never the revoked one."""
    s, fake = served
    for path in ("/v1/proxy/consul/v1/kv", "/v1/proxy/nomad/v1/jobs"):
        assert (await s.agent(path))[0] == 200
    before = {lease_id: lease.data["token"] for lease_id, lease in fake.leases.items()}
    logins = sorted(fake.tokens)
    code, out, err = await s.cli("rotate", "vault-main")
    assert code == 0, err
    assert "service consul: 1 outstanding credentials revoked" in out
    assert "service nomad: 1 outstanding credentials revoked" in out
    assert all(lease.revoked for lease in fake.leases.values())
    assert len([c for c in fake.calls if c.path == "/v1/sys/leases/revoke"]) == 2
    assert sorted(fake.revoked_tokens) == logins and fake.tokens == {}
    assert (await s.agent("/v1/proxy/consul/v1/kv"))[0] == 200  # not sealed
    assert len(fake.tokens) == 1  # a new login
    newest = list(fake.leases.values())[-1]
    assert newest.data["token"] not in before.values()
    assert upstream.received[-1].headers["Authorization"] == "Bearer " + newest.data["token"]
    rotated = [r for r in s.audit() if r["TURRET_EVENT"] == "credential_rotated"]
    assert sorted(r["TURRET_SERVICE"] for r in rotated) == ["consul", "nomad"]


async def test_turret_rotate_vault_says_when_a_lease_could_not_be_revoked(
    served: tuple[Served, FakeVault],
) -> None:
    s, fake = served
    assert (await s.agent("/v1/proxy/consul/v1/kv"))[0] == 200
    fake.fail_next = 2  # Vault answers 503 to the lease's revocation and the token's
    code, out, err = await s.cli("rotate", "vault-main", "--json")
    assert code == 1, err
    doc = json.loads(out)
    (consul,) = [x for x in doc["services"] if x["service"] == "consul"]
    assert consul["revoked"] == 0
    assert consul["revoke_failures"] == ["vault revoke: HTTP 503", "vault token revoke: HTTP 503"]
    assert doc["ok"] is False
    failed = [r for r in s.audit() if r["TURRET_EVENT"] == "credential_revoke_failed"]
    assert [r["TURRET_SERVICE"] for r in failed] == ["consul", "consul"]
    (rotated,) = [
        r for r in s.audit()
        if r["TURRET_EVENT"] == "credential_rotated" and r["TURRET_SERVICE"] == "consul"
    ]  # fmt: skip
    assert rotated["PRIORITY"] == "3"  # err: a credential may still be valid at its source
