"""No oracle: a refused request is answered the same whether or not it carries a secret.

Attack: a prompt-injected agent guesses at a credential (or another agent's token) and watches
how Turret answers. If a request it may not make is answered differently when it carries a
secret Turret holds (`credential_in_request` instead of `forbidden`, a quoted value scrubbed to
`[REDACTED]`), every answer confirms or refutes a guess. Each test sends pairs of requests that
differ only in one value: a secret in some encoding, or a decoy of the same shape that is none,
in the path, query, a header name or value, the body, a parameter name or value, a capability
or service name; the two answers must be byte-identical but for the request id.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientResponse
from yarl import URL

from tests.adversarial.conftest import Hardened
from tests.capabilities.conftest import CapGateway, make_capability_gateway
from tests.gateway import Canaries
from turret.auth import new_token

Encode = Callable[[str], str]


def _pct_all(value: str) -> str:
    return "".join(f"%{b:02X}" for b in value.encode())


# Every encoding the guards know, and partial ones that only a decoder reveals.
FORMS: dict[str, Encode] = {
    "raw": lambda v: v,
    "percent-encoded": _pct_all,
    "percent-encoded-lowercase": lambda v: _pct_all(v).lower(),
    "partly-percent-encoded": lambda v: _pct_all(v[0]) + v[1:],
    "double-percent-encoded": lambda v: _pct_all(v[0]).replace("%", "%25") + v[1:],
    "base64url": lambda v: base64.urlsafe_b64encode(v.encode()).decode(),
    "hex": lambda v: v.encode().hex(),
}
# In JSON text, a `\u` escape hides the value from the raw bytes.
JSON_FORMS: dict[str, Encode] = {**FORMS, "json-escaped": lambda v: f"\\u{ord(v[0]):04x}{v[1:]}"}
HEADER_NAME_FORMS = ("raw", "percent-encoded", "partly-percent-encoded", "hex")
SECRETS = ("credential", "own-token", "other-agents-token", "token-shaped")


def decoy(secret: str) -> str:
    """A value of the same shape and length that is no secret: one character changed."""
    return chr(ord(secret[0]) + 1) + secret[1:]


async def answer(resp: ClientResponse) -> tuple[int, str, str]:
    """Status and the body with its request id taken out (the one part that may differ)."""
    body = await resp.json()
    if "error" in body:
        assert body["error"].pop("request_id") == resp.headers["X-Request-Id"]
    return resp.status, resp.headers.get("Retry-After", ""), json.dumps(body, sort_keys=True)


# --- the proxy, whoami and the capability list (the hardened gateway) -----------------------


def _hardened_secrets(gw: Hardened) -> dict[str, str]:
    return {
        "credential": gw.canaries["gitea-token"],
        "own-token": gw.token,
        "other-agents-token": gw.other_token,
        "token-shaped": new_token(),
    }


def _proxy_request(position: str, value: str) -> tuple[str, str, dict[str, Any]]:
    """(method, raw target, request arguments) of a request refused by policy or auth."""
    denied = "/v1/proxy/gitea/not-granted"
    cases: dict[str, tuple[str, str, dict[str, Any]]] = {
        "path": ("GET", f"{denied}/{value}", {}),
        "query": ("GET", f"{denied}?q={value}", {}),
        "header-value": ("GET", denied, {"headers": {"X-Note": value}}),
        "header-name": ("GET", denied, {"headers": {f"X-{value}": "1"}}),
        "body": ("POST", denied, {"data": json.dumps({"body": value}).encode()}),
        "service": ("GET", f"/v1/proxy/{value}/api/v1/user", {}),
        "granted-path-wrong-method": ("PATCH", f"/v1/proxy/gitea/api/v1/user?x={value}", {}),
        "unauthenticated-path": (
            "GET",
            f"/v1/proxy/gitea/api/v1/user/{value}",
            {"headers": {"Authorization": "Bearer turret_wrong"}},
        ),
        "unknown-endpoint": ("GET", f"/v1/{value}", {}),
        "whoami-query": ("GET", f"/v1/whoami?x={value}", {}),
        "list-header": ("GET", "/v1/capabilities", {"headers": {"X-Note": value}}),
    }
    return cases[position]


@pytest.mark.parametrize("secret", SECRETS)
@pytest.mark.parametrize(
    "position",
    [
        "path",
        "query",
        "header-value",
        "header-name",
        "body",
        "service",
        "granted-path-wrong-method",
        "unauthenticated-path",
        "unknown-endpoint",
        "whoami-query",
        "list-header",
    ],
)
async def test_oracle_denied_proxy_request_answers_the_same_whatever_it_carries(
    hardened: Hardened, position: str, secret: str
) -> None:
    for token in (hardened.token, hardened.other_token):  # both tokens are now known to Turret
        await hardened.request("GET", "/v1/whoami", headers=hardened.auth(token))
    value = _hardened_secrets(hardened)[secret]
    forms = HEADER_NAME_FORMS if position == "header-name" else FORMS
    for form in forms:
        answers = []
        for sent in (value, decoy(value)):
            method, target, kwargs = _proxy_request(position, FORMS[form](sent))
            answers.append(await answer(await hardened.request(method, target, **kwargs)))
        assert answers[0] == answers[1], (form, answers)
        assert answers[0][0] != 200 or position.startswith(("whoami", "list")), answers
    assert hardened.upstream.received == []


# --- the capability API --------------------------------------------------------------------


@pytest.fixture
async def capgw(tmp_path: Path, leak_check: Canaries) -> AsyncIterator[CapGateway]:
    """The capability gateway, every agent's token known to Turret."""
    gateway, servers = await make_capability_gateway(tmp_path, creds=leak_check)
    for agent in gateway.tokens:  # every agent's token is now known to Turret
        await gateway.client.get("/v1/whoami", headers=gateway.auth(agent))
    yield gateway
    await gateway.client.close()
    for server in servers:
        await server.close()


def _cap_secrets(gw: CapGateway) -> dict[str, str]:
    return {
        "credential": gw.canaries["gitea-token"],
        "own-token": gw.tokens["ops/alice"],
        "other-agents-token": gw.tokens["opencode"],
        "token-shaped": new_token(),
    }


def _call(position: str, value: str) -> tuple[str, str, bytes]:
    """(agent, raw target, body) of a call that is refused: by name, by a constraint, by
    validation; the value is JSON text (so an escape is one)."""
    pct, git = "/v1/capabilities/pve.pct_status", "/v1/capabilities/git.create_issue"
    cases = {
        # ops/alice has no grant for git.*: decided by the name alone.
        "denied-by-name-value": ("ops/alice", git, '{"title": "V"}'),
        "denied-by-name-param-name": ("ops/alice", git, '{"V": 1}'),
        # qbit.add_torrent has an explicit deny rule for opencode.
        "denied-by-rule": ("opencode", "/v1/capabilities/qbit.add_torrent", '{"magnet": "V"}'),
        # ops/alice may list torrents of one category only.
        "denied-by-constraint": (
            "ops/alice",
            "/v1/capabilities/qbit.list_torrents",
            '{"category": "V"}',
        ),
        "unknown-param-name": ("opencode", pct, '{"ctid": 101, "V": 1}'),
        "invalid-value": ("opencode", pct, '{"ctid": "V"}'),
        "duplicate-key": ("opencode", pct, '{"V": 1, "V": 2}'),
        "not-json": ("opencode", pct, '{"ctid": V}'),
        "query": ("ops/alice", "/v1/capabilities/git.create_issue?x=V", "{}"),
    }
    agent, target, body = cases[position]
    return agent, target.replace("V", value), body.replace("V", value).encode()


@pytest.mark.parametrize("secret", SECRETS)
@pytest.mark.parametrize(
    "position",
    [
        "denied-by-name-value",
        "denied-by-name-param-name",
        "denied-by-rule",
        "denied-by-constraint",
        "unknown-param-name",
        "invalid-value",
        "duplicate-key",
        "not-json",
        "query",
    ],
)
async def test_oracle_refused_capability_call_answers_the_same_whatever_it_carries(
    capgw: CapGateway, position: str, secret: str
) -> None:
    value = _cap_secrets(capgw)[secret]
    for form, encode in JSON_FORMS.items():
        answers = []
        for sent in (value, decoy(value)):
            agent, target, body = _call(position, encode(sent))
            url = URL(str(capgw.client.make_url("")).rstrip("/") + target, encoded=True)
            resp = await capgw.client.session.post(url, data=body, headers=capgw.auth(agent))
            answers.append(await answer(resp))
        assert answers[0] == answers[1], (form, answers)
        assert answers[0][0] in {400, 403, 404, 422}, answers
    assert capgw.fakes.seen == []


@pytest.mark.parametrize("secret", SECRETS)
async def test_oracle_capability_name_is_answered_the_same(capgw: CapGateway, secret: str) -> None:
    value = _cap_secrets(capgw)[secret]
    for form, encode in FORMS.items():
        answers = []
        for name in (value, decoy(value), value.lower(), decoy(value).lower()):
            target = f"/v1/capabilities/{encode(name)}"
            url = URL(str(capgw.client.make_url("")).rstrip("/") + target, encoded=True)
            resp = await capgw.client.session.post(url, data=b"{}", headers=capgw.auth())
            answers.append(await answer(resp))
        assert answers[0] == answers[1] and answers[2] == answers[3], (form, answers)
        assert "not_found" in answers[2][2] or "bad_request" in answers[2][2], answers


def _question(position: str, value: str) -> str:
    """An explain question (JSON text); the value may be a JSON escape."""
    questions = {
        "service": '{"service": "V", "method": "GET", "path": "/x"}',
        "denied-path": '{"service": "qbit", "method": "GET", "path": "/api/v2/V"}',
        "granted-path": '{"service": "qbit", "method": "GET", "path": "/api/v2/app/V"}',
        "report-mode-path": '{"service": "git", "method": "GET", "path": "/V"}',
        "capability": '{"capability": "V"}',
        "unknown-key": '{"service": "qbit", "method": "GET", "path": "/", "V": 1}',
        "param-name": '{"capability": "pve.pct_status", "params": {"ctid": 101, "V": 1}}',
        "param-value": '{"capability": "pve.pct_status", "params": {"ctid": 101, "node": "V"}}',
        "granted-param-value": (
            '{"capability": "git.create_issue", "params": {"repo": "me/x", "title": "V"}}'
        ),
        "denied-by-constraint": (
            '{"capability": "home.call_service", '
            '"params": {"domain": "V", "service": "turn_on", "entity_id": "light.x"}}'
        ),
    }
    return questions[position].replace("V", value)


@pytest.mark.parametrize("secret", SECRETS)
@pytest.mark.parametrize(
    "position",
    [
        "service",
        "denied-path",
        "granted-path",
        "report-mode-path",
        "capability",
        "unknown-key",
        "param-name",
        "param-value",
        "granted-param-value",
        "denied-by-constraint",
    ],
)
async def test_oracle_explain_answers_the_same_whatever_it_asks_about(
    capgw: CapGateway, position: str, secret: str
) -> None:
    value = _cap_secrets(capgw)[secret]
    agent = "rollout" if position == "report-mode-path" else "opencode"
    for form, encode in JSON_FORMS.items():
        answers = []
        for sent in (value, decoy(value)):
            resp = await capgw.client.post(
                "/v1/explain", data=_question(position, encode(sent)), headers=capgw.auth(agent)
            )
            answers.append(await answer(resp))
        assert answers[0] == answers[1], (form, answers)
    assert capgw.fakes.seen == []
