"""Red team, oracle: refusals the issue-10 suite did not compare, compared in full.

Each pair of requests differs only in one value, a secret (a credential, an agent's token, a
token-shaped value) or a decoy of the same length; the two answers must agree in status, every
header but `Date` and `X-Request-Id` (so `Content-Length`, `Allow`, `Retry-After`, `Connection`
too) and the body but its request id. Refusals tried: 405 on every fixed endpoint, 404 under
`/v1` for every method, HEAD and OPTIONS on a denied path, an over-size body on a denied path
(403: policy first) and on an allowed one (413), 400 for a path Turret refuses to canonicalise,
401 for a secret sent as the bearer token, and 429 once the agent is over its rate.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import pytest
from aiohttp import ClientResponse
from yarl import URL

from tests.adversarial.conftest import Hardened, MakeHardened
from tests.adversarial.test_oracle import (
    FORMS,
    _call,
    _cap_secrets,
    _proxy_request,
    _question,
    capgw,
    decoy,
)
from tests.capabilities.conftest import CapGateway
from turret.auth import new_token

SECRETS = ("credential", "own-token", "other-agents-token", "token-shaped")
_VARYING = {"date", "x-request-id"}
__all__ = ["capgw"]  # the capability gateway fixture, shared with the issue-10 oracle tests


async def full_answer(resp: ClientResponse) -> tuple[int, list[tuple[str, str]], str]:
    """Status, headers but those that always differ, and the body without its request id."""
    raw = await resp.read()
    body = raw.decode("utf-8", "replace")
    if raw and resp.content_type == "application/json":
        doc = json.loads(raw)
        if isinstance(doc, dict) and isinstance(doc.get("error"), dict):
            doc["error"].pop("request_id", None)
        body = json.dumps(doc, sort_keys=True)
    headers = sorted((k.lower(), v) for k, v in resp.headers.items() if k.lower() not in _VARYING)
    return resp.status, headers, body


def _secret(gw: Hardened, which: str) -> str:
    return {
        "credential": gw.canaries["gitea-token"],
        "own-token": gw.token,
        "other-agents-token": gw.other_token,
        "token-shaped": new_token(),
    }[which]


BIG = 1 << 20  # the default max_request_bytes


def _request(case: str, value: str) -> tuple[str, str, dict[str, Any]]:
    denied = "/v1/proxy/gitea/not-granted"
    cases: dict[str, tuple[str, str, dict[str, Any]]] = {
        "405-whoami-query": ("POST", f"/v1/whoami?x={value}", {}),
        "405-whoami-body": ("PUT", "/v1/whoami", {"data": value.encode()}),
        "405-capabilities-header": ("DELETE", "/v1/capabilities", {"headers": {"X-N": value}}),
        "405-explain-query": ("GET", f"/v1/explain?q={value}", {}),
        "404-v1-delete": ("DELETE", f"/v1/{value}", {}),
        "404-v1-nested-post": ("POST", f"/v1/x/{value}/y", {"data": b"{}"}),
        "404-root": ("GET", f"/{value}", {}),
        "head-denied": ("HEAD", f"{denied}/{value}", {}),
        "options-denied": ("OPTIONS", f"{denied}?q={value}", {}),
        "403-denied-path-big-body": (
            "POST",
            denied,
            {"data": io.BytesIO(value.encode() + b"x" * BIG)},
        ),
        "413-granted-path": (
            "POST",
            "/v1/proxy/gitea/api/v1/repos/me/x/issues",
            {"data": io.BytesIO(value.encode() + b"x" * BIG)},
        ),
        "400-bad-path": ("GET", f"{denied}/{value}/%2e%2e", {}),
        "400-bad-escape": ("GET", f"{denied}/{value}/%zz", {}),
        "401-secret-as-bearer": ("GET", "/v1/whoami", {"headers": {"Authorization": value}}),
        "401-bearer-scheme": (
            "GET",
            "/v1/whoami",
            {"headers": {"Authorization": f"Bearer {value}x"}},
        ),
    }
    return cases[case]


CASES = [
    "405-whoami-query",
    "405-whoami-body",
    "405-capabilities-header",
    "405-explain-query",
    "404-v1-delete",
    "404-v1-nested-post",
    "404-root",
    "head-denied",
    "options-denied",
    "403-denied-path-big-body",
    "413-granted-path",
    "400-bad-path",
    "400-bad-escape",
    "401-secret-as-bearer",
    "401-bearer-scheme",
]


@pytest.mark.parametrize("secret", SECRETS)
@pytest.mark.parametrize("case", CASES)
async def test_redteam_oracle_refusal_answered_identically(
    hardened: Hardened, case: str, secret: str
) -> None:
    for token in (hardened.token, hardened.other_token):
        await hardened.request("GET", "/v1/whoami", headers=hardened.auth(token))
    value = _secret(hardened, secret)
    forms = ("raw", "percent-encoded") if "big" in case or case.startswith("413") else tuple(FORMS)
    for form in forms:
        answers = []
        for sent in (value, decoy(value)):
            method, target, kwargs = _request(case, FORMS[form](sent))
            resp = await hardened.request(method, target, **kwargs)
            answers.append(await full_answer(resp))
        assert answers[0] == answers[1], (form, answers)
        assert answers[0][0] == int(case[:3]) if case[0].isdigit() else answers[0][0] >= 400, (
            answers
        )
    assert hardened.upstream.received == []


@pytest.mark.parametrize("secret", SECRETS)
async def test_redteam_oracle_over_rate_answered_identically(
    make_hardened: MakeHardened, secret: str
) -> None:
    gw = await make_hardened(agent_limits="limits: {requests_per_second: 0.001, burst: 1}")
    await gw.request("GET", "/v1/whoami")
    value = _secret(gw, secret)
    answers = []
    for sent in (value, decoy(value), value, decoy(value)):
        resp = await gw.request("GET", f"/v1/proxy/gitea/api/v1/user?q={sent}")
        status, headers, body = await full_answer(resp)
        retry = [v for k, v in headers if k == "retry-after"]
        answers.append((status, [h for h in headers if h[0] != "retry-after"], body, len(retry)))
    assert all(a == answers[0] for a in answers), answers
    assert answers[0][0] == 429


# --- the issue-10 positions, with the spellings the red team added to the guards --------------


def _fullwidth(s: str) -> str:
    return "".join(chr(ord(c) + 0xFEE0) if 0x21 <= ord(c) <= 0x7E else c for c in s)


NEW_FORMS: dict[str, Callable[[str], str]] = {
    "fullwidth-pct": lambda v: quote(_fullwidth(v), safe=""),
    "quoted-printable": lambda v: "".join(f"={b:02X}" for b in v.encode()),
    "zero-width-pct": lambda v: quote(v[:5] + "\u200b" + v[5:], safe=""),
    "markup-split-pct": lambda v: quote(v[:5] + "<b></b>" + v[5:], safe=""),
    "newline-split-pct": lambda v: v[:12] + "%0A" + v[12:],
}
PROXY_POSITIONS = ["path", "query", "header-value", "body", "unknown-endpoint", "whoami-query"]


@pytest.mark.parametrize("secret", SECRETS)
@pytest.mark.parametrize("position", PROXY_POSITIONS)
async def test_redteam_oracle_new_spellings_in_denied_proxy_requests(
    hardened: Hardened, position: str, secret: str
) -> None:
    for token in (hardened.token, hardened.other_token):
        await hardened.request("GET", "/v1/whoami", headers=hardened.auth(token))
    value = _secret(hardened, secret)
    for form, encode in NEW_FORMS.items():
        answers = []
        for sent in (value, decoy(value)):
            method, target, kwargs = _proxy_request(position, encode(sent))
            answers.append(await full_answer(await hardened.request(method, target, **kwargs)))
        assert answers[0] == answers[1], (form, answers)
    assert hardened.upstream.received == []


@pytest.mark.parametrize("secret", SECRETS)
@pytest.mark.parametrize(
    "position", ["denied-by-name-value", "denied-by-rule", "invalid-value", "query"]
)
async def test_redteam_oracle_new_spellings_in_refused_capability_calls(
    capgw: CapGateway, position: str, secret: str
) -> None:
    value = _cap_secrets(capgw)[secret]
    for form, encode in NEW_FORMS.items():
        answers = []
        for sent in (value, decoy(value)):
            agent, target, body = _call(position, encode(sent))
            url = URL(str(capgw.client.make_url("")).rstrip("/") + target, encoded=True)
            resp = await capgw.client.session.post(url, data=body, headers=capgw.auth(agent))
            answers.append(await full_answer(resp))
        assert answers[0] == answers[1], (form, answers)


@pytest.mark.parametrize("secret", SECRETS)
@pytest.mark.parametrize(
    "position", ["denied-path", "granted-path", "report-mode-path", "param-value"]
)
async def test_redteam_oracle_new_spellings_in_explain(
    capgw: CapGateway, position: str, secret: str
) -> None:
    value = _cap_secrets(capgw)[secret]
    agent = "rollout" if position == "report-mode-path" else "opencode"
    for form, encode in NEW_FORMS.items():
        answers = []
        for sent in (value, decoy(value)):
            resp = await capgw.client.post(
                "/v1/explain", data=_question(position, encode(sent)), headers=capgw.auth(agent)
            )
            answers.append(await full_answer(resp))
        assert answers[0] == answers[1], (form, answers)
