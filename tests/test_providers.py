"""Credential providers: every credential a request carries comes from one, and every value one
hands out is guarded. Static providers per auth kind; the qBittorrent login provider against the
fake qBittorrent (a real aiohttp server on loopback), through `upstream.send`, the one way out.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp.resolver import DefaultResolver
from aiohttp.test_utils import TestServer
from multidict import CIMultiDict

from tests.capabilities.fake_services import FakeState, qbittorrent_app
from turret.authkinds import CredentialRef, HeaderAuth, LoginAuth, QueryAuth
from turret.config import load_config
from turret.connector import SessionPool
from turret.echo import Redactor
from turret.model import Outbound, Service
from turret.netpolicy import AddressPolicy
from turret.paths import canonical_path
from turret.providers import CredentialProvider, Scope, fingerprint
from turret.providers.build import build_runtime, providers_for
from turret.providers.login import LoginProvider, LoginState
from turret.providers.static import StaticProvider
from turret.secret import Secret
from turret.upstream import send

TOKEN = "CANARY-providers-token-0123456789abcdef"
PASSWORD = "CANARY-providers-login-0123456789abcdef"
SECRETS = {"tok": Secret(TOKEN), "pw": Secret(PASSWORD)}
CONFIG = load_config("""
services:
  bearer: {url: "https://a.example", auth: {bearer: tok}}
  basic: {url: "https://b.example", auth: {basic: {username: u, password: {credential: pw}}}}
  header: {url: "https://c.example", auth: {header: {name: X-Key, value: tok, prefix: "K "}}}
  query: {url: "https://d.example", auth: {query: {name: key, value: pw}}}
""")
SCOPE = Scope("bearer")


async def test_static_provider_injection_per_auth_kind() -> None:
    providers = providers_for(CONFIG, SECRETS, {})
    assert all(isinstance(p, StaticProvider) for p in providers.values())
    assert sorted(providers) == ["basic", "bearer", "header", "query"]
    assert (await providers["bearer"].injection(SCOPE)).headers == {
        "Authorization": f"Bearer {TOKEN}"
    }
    basic = base64.b64encode(f"u:{PASSWORD}".encode()).decode()
    assert (await providers["basic"].injection(SCOPE)).headers == {
        "Authorization": f"Basic {basic}"
    }
    assert (await providers["header"].injection(SCOPE)).headers == {"X-Key": f"K {TOKEN}"}
    query = await providers["query"].injection(SCOPE)
    assert query.headers == {} and query.query == ("key", PASSWORD)


async def test_static_provider_ignores_the_scope() -> None:
    provider = providers_for(CONFIG, SECRETS, {})["header"]
    scopes = [Scope("header"), Scope("header", "header.read", {"x": 1}), Scope("other")]
    assert len({repr(await provider.injection(s)) for s in scopes}) == 1


def test_static_provider_guards_every_value_it_sends() -> None:
    providers = providers_for(CONFIG, SECRETS, {})
    guarded = {name: providers[name].guarded() for name in providers}
    assert f"Bearer {TOKEN}" in guarded["bearer"]
    assert any(base64.b64encode(f"u:{PASSWORD}".encode()).decode() in v for v in guarded["basic"])
    assert f"K {TOKEN}" in guarded["header"]
    # A query value is guarded as the credential, not only in its URL-encoded form.
    special = QueryAuth("key", "pw").injection({"pw": Secret("CANARY-a b&c=d/e")})
    assert "CANARY-a b&c=d/e" in StaticProvider("q", special).guarded()


def test_provider_repr_hides_every_value() -> None:
    providers = providers_for(CONFIG, SECRETS, {})
    text = repr(providers)
    login = LoginProvider(
        Service("qbit", "http://127.0.0.1:1", LoginAuth("admin", PASSWORD)), ("admin", PASSWORD)
    )
    text += repr(login) + repr(login.state)
    assert TOKEN not in text and PASSWORD not in text and "CANARY" not in text


@pytest.mark.parametrize("value", [TOKEN, PASSWORD, "x", "", "ünïcode"])
def test_fingerprint_is_not_a_plain_hash(value: str) -> None:
    fp = fingerprint(value)
    assert len(fp) == 8 and int(fp, 16) >= 0
    for plain in (hashlib.sha256, hashlib.sha1, hashlib.md5, hashlib.sha512, hashlib.blake2b):
        assert fp != plain(value.encode()).hexdigest()[:8]
    assert fp != hmac.new(b"", value.encode(), hashlib.sha256).hexdigest()[:8]  # unkeyed HMAC
    assert fingerprint(value) == fp  # stable within the process


def test_fingerprint_differs_across_values_and_providers() -> None:
    values = [f"CANARY-fp-{i:04d}" for i in range(500)]
    assert len({fingerprint(v) for v in values}) == len(values)
    # Parts are separated: ("ab", "c") and ("a", "bc") are different values.
    assert fingerprint("ab", "c") != fingerprint("a", "bc")
    providers = providers_for(CONFIG, SECRETS, {})
    assert len({p.fingerprint for p in providers.values()}) == len(providers)
    other = providers_for(CONFIG, {**SECRETS, "tok": Secret(TOKEN + "x")}, {})
    assert other["bearer"].fingerprint != providers["bearer"].fingerprint
    assert other["basic"].fingerprint == providers["basic"].fingerprint  # same credential


def test_runtime_redactor_covers_every_provider_value(tmp_path: Path) -> None:
    (tmp_path / "tok").write_text(TOKEN + "\n")
    (tmp_path / "pw").write_text(PASSWORD + "\n")
    runtime = build_runtime(CONFIG, str(tmp_path))
    for provider in runtime.providers.values():
        for value in provider.guarded():
            assert runtime.redactor.found(value.encode()), provider.name


# --- the login provider, through upstream.send --------------------------------------------------


@dataclass
class Qbit:
    state: FakeState
    service: Service
    pool: SessionPool


LOOPBACK = AddressPolicy((ipaddress.ip_network("127.0.0.0/8"),))


@pytest.fixture
async def qbit() -> AsyncIterator[Qbit]:
    state = FakeState({"qbittorrent": PASSWORD})
    server = TestServer(qbittorrent_app(state), host="127.0.0.1")
    await server.start_server()
    url = str(server.make_url("")).rstrip("/")
    auth = LoginAuth("admin", CredentialRef("pw"))
    pool = SessionPool(DefaultResolver())
    yield Qbit(state, Service("qbit", url, auth, address_policy=LOOPBACK), pool)
    await pool.close()
    await server.close()


def login_provider(
    qbit: Qbit, password: str = PASSWORD, state: LoginState | None = None
) -> LoginProvider:
    return LoginProvider(qbit.service, ("admin", password), state)


async def get(qbit: Qbit, provider: CredentialProvider, path: str) -> tuple[int, bytes, int]:
    out = Outbound("GET", canonical_path(path), "", CIMultiDict(), b"")
    result = await send(qbit.pool, provider, qbit.service, out, Redactor([PASSWORD]))
    return result.status, result.body, result.redactions


async def test_login_provider_logs_in_once_and_guards_its_cookie(qbit: Qbit) -> None:
    provider = login_provider(qbit)
    assert provider.guarded() == [PASSWORD]  # no session yet: only the password
    before = provider.fingerprint
    for _ in range(3):
        status, _, _ = await get(qbit, provider, "/api/v2/torrents/info")
        assert status == 200
    assert qbit.state.logins == 1
    (sid,) = qbit.state.issued
    assert sid in provider.guarded() and f"SID={sid}" in provider.guarded()
    assert provider.fingerprint != before and provider.fingerprint != sid[:8]


async def test_login_provider_logs_in_again_on_403(qbit: Qbit) -> None:
    provider = login_provider(qbit)
    assert (await get(qbit, provider, "/api/v2/torrents/info"))[0] == 200
    first = provider.fingerprint
    qbit.state.sids.clear()  # the session expires behind Turret's back
    status, _, _ = await get(qbit, provider, "/api/v2/torrents/info")
    assert status == 200 and qbit.state.logins == 2  # answered 403, logged in, retried once
    old, new = qbit.state.issued
    assert new in provider.guarded() and old not in provider.guarded()
    assert provider.fingerprint != first


class Forgetful(set[str]):
    """A session store that forgets every session it is given: every call is answered 403."""

    def add(self, element: str) -> None:
        pass


async def test_login_provider_retries_a_403_only_once(qbit: Qbit) -> None:
    provider = login_provider(qbit)
    qbit.state.sids = Forgetful()
    status, _, _ = await get(qbit, provider, "/api/v2/torrents/info")
    assert status == 403  # the retry's answer stands: no loop of logins
    paths = [seen.raw_path for seen in qbit.state.requests("qbittorrent")]
    login, info = "/api/v2/auth/login", "/api/v2/torrents/info"
    assert paths == [login, info, login, info]


async def test_login_provider_other_statuses_are_not_retried(qbit: Qbit) -> None:
    provider = login_provider(qbit)
    for path in ("/api/v2/torrents/nothing-here", "/api/v2/torrents/info"):
        await get(qbit, provider, path)
    assert qbit.state.logins == 1  # a 404 is no sign of an expired session


async def test_login_provider_cookie_echo_is_redacted_on_the_way_out(qbit: Qbit) -> None:
    provider = login_provider(qbit)
    status, body, redactions = await get(qbit, provider, "/api/v2/app/cookie")
    (sid,) = qbit.state.issued
    assert status == 200 and sid.encode() not in body and redactions >= 1


async def test_login_provider_state_survives_a_rebuild(qbit: Qbit) -> None:
    first = login_provider(qbit)
    await get(qbit, first, "/api/v2/torrents/info")
    # A reload builds a new provider with the same state: no new login.
    reloaded = login_provider(qbit, state=first.state)
    await get(qbit, reloaded, "/api/v2/torrents/info")
    assert qbit.state.logins == 1 and reloaded.guarded() == first.guarded()
    # A new credential does not reuse (or guard as its own) the old one's session.
    qbit.state.tokens["qbittorrent"] = PASSWORD + "-new"
    changed = login_provider(qbit, PASSWORD + "-new", state=first.state)
    assert changed.guarded() == [PASSWORD + "-new"]
    await get(qbit, changed, "/api/v2/torrents/info")
    assert qbit.state.logins == 2


async def test_providers_for_hands_login_state_to_the_next_runtime() -> None:
    config = load_config("""
services:
  qbit:
    kind: qbittorrent
    url: http://127.0.0.1:8080
    auth: {login: {username: admin, password: {credential: pw}}}
  bearer: {url: "https://a.example", auth: {bearer: tok}}
""")
    first = providers_for(config, SECRETS, {})
    second = providers_for(config, SECRETS, first)
    login, again = first["qbit"], second["qbit"]
    assert isinstance(login, LoginProvider) and isinstance(again, LoginProvider)
    assert again.state is login.state and again is not login
    assert isinstance(second["bearer"], StaticProvider)


async def test_login_provider_revoke_forgets_the_session(qbit: Qbit) -> None:
    provider = login_provider(qbit)
    await get(qbit, provider, "/api/v2/torrents/info")
    await provider.revoke()
    assert provider.guarded() == [PASSWORD]
    await get(qbit, provider, "/api/v2/torrents/info")
    assert qbit.state.logins == 2


async def test_static_provider_optional_methods_are_no_ops() -> None:
    provider = StaticProvider("s", HeaderAuth("X-Key", "tok").injection(SECRETS))
    injection = await provider.injection(SCOPE)
    assert await provider.renew(SCOPE, injection, 403) is None
    assert provider.response_guard(injection) is None
    await provider.revoke()
    await provider.rotate()
    assert await provider.injection(SCOPE) is injection


def test_build_runtime_hands_login_state_to_the_reloaded_runtime(tmp_path: Path) -> None:
    config = load_config("""
services:
  qbit:
    kind: qbittorrent
    url: http://127.0.0.1:8080
    auth: {login: {username: admin, password: {credential: pw}}}
""")
    (tmp_path / "pw").write_text(PASSWORD + "\n")
    first = build_runtime(config, str(tmp_path))
    reloaded = build_runtime(config, str(tmp_path), previous=first)
    fresh = build_runtime(config, str(tmp_path))
    old, new, other = (r.providers["qbit"] for r in (first, reloaded, fresh))
    assert isinstance(old, LoginProvider) and isinstance(new, LoginProvider)
    assert isinstance(other, LoginProvider)
    assert new.state is old.state and other.state is not old.state
