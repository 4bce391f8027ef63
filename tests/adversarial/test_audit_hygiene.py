"""Audit hygiene: no secret or token the agent sends, in any encoding, reaches a record or a log.

Attack: an agent pastes a credential or a token, percent-encoded in whole or in part, JSON-escaped,
base64 or hex, into every place Turret records: the path, the query, the service name, a
capability name, a parameter name, a logged parameter value, an unknown key of an explain
question. The gateway fixtures check every record and log line for every encoding the guards know;
here every field value is also decoded (percent-decoding, once and twice, JSON unescapes, and
both) and searched for the plain secret: a field replaced in part would still give it away.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote, unquote_plus

import pytest
from yarl import URL

from tests.adversarial.conftest import Hardened
from tests.adversarial.test_oracle import JSON_FORMS
from tests.capabilities.conftest import CapGateway, make_capability_gateway
from tests.gateway import Canaries
from turret.auth import new_token

_JSON_ESCAPE = re.compile(r"\\u([0-9a-fA-F]{4})")


def _json_unescaped(text: str) -> str:
    return _JSON_ESCAPE.sub(lambda m: chr(int(m[1], 16)), text)


def decoded_views(text: str) -> set[str]:
    """`text` as a reader of the record could decode it, in every order."""
    views = {text}
    for _ in range(2):
        views |= {f(v) for v in views for f in (unquote, unquote_plus, _json_unescaped)}
    return views


def assert_no_secret_in_any_view(records: list[dict[str, Any]], secrets: list[str]) -> None:
    for record in records:
        for key, value in record.items():
            for view in decoded_views(str(value)):
                for secret in secrets:
                    assert secret not in view, f"{key} gives a secret away: {value!r}"


def _hardened_requests(value: str) -> list[tuple[str, str, dict[str, Any]]]:
    """Requests each of which records `value` somewhere, were it not scrubbed."""
    return [
        ("GET", f"/v1/proxy/gitea/not-granted/{value}", {}),  # denied: TURRET_PATH, reason
        ("GET", f"/v1/proxy/gitea/echo/{value}", {}),  # allowed, refused by the guard
        ("GET", f"/v1/proxy/gitea/echo/x?q={value}", {}),
        ("GET", f"/v1/proxy/{value}/x", {}),  # TURRET_SERVICE
        ("GET", f"/v1/proxy/gitea/x/{value}/../y", {}),  # 400 before the decision
        ("GET", f"/v1/{value}", {}),  # no such endpoint
        ("POST", f"/v1/whoami/{value}", {}),
        ("GET", f"/v1/proxy/gitea/{value}", {"headers": {"Authorization": "Bearer nope"}}),
        ("POST", f"/v1/capabilities/{value}", {"data": b"{}"}),
        ("POST", "/v1/explain", {"data": _explain(value, "service")}),
        ("POST", "/v1/explain", {"data": _explain(value, "path")}),
    ]


def _explain(value: str, where: str) -> bytes:
    service, path = (value, "/x") if where == "service" else ("gitea", f"/a/{value}")
    return ('{"service": "' + service + '", "method": "GET", "path": "' + path + '"}').encode()


@pytest.mark.parametrize("form", list(JSON_FORMS))
@pytest.mark.parametrize(
    "secret", ["credential", "own-token", "other-agents-token", "never-presented-token"]
)
async def test_audit_hygiene_proxy_and_api_records_hold_no_secret(
    hardened: Hardened, secret: str, form: str
) -> None:
    for token in (hardened.token, hardened.other_token):
        await hardened.request("GET", "/v1/whoami", headers=hardened.auth(token))
    fresh = new_token()
    value = {
        "credential": hardened.canaries["gitea-token"],
        "own-token": hardened.token,
        "other-agents-token": hardened.other_token,
        # A token no agent has presented since start: recognised by its shape alone.
        "never-presented-token": fresh,
    }[secret]
    for method, target, kwargs in _hardened_requests(JSON_FORMS[form](value)):
        resp = await hardened.request(method, target, **kwargs)
        # Forwarded (200) where the exfiltration guard does not read that encoding as a secret:
        # the record still must not give it away.
        assert resp.status in {200, 400, 401, 403, 404, 405, 422}, (target, await resp.text())
    records = hardened.audit()
    assert len(records) >= 2 + len(_hardened_requests(value))
    secrets = [*hardened.canaries.values(), hardened.token, hardened.other_token, fresh]
    assert_no_secret_in_any_view(records, secrets)


NOTES_GROUP = """\
  notes:
    agents: [opencode]
    capabilities: [push.note]
"""


@pytest.fixture
async def capgw(tmp_path: Path, leak_check: Canaries) -> AsyncIterator[CapGateway]:
    """The capability gateway, with a logged free-text parameter granted (push.note.text)."""
    gateway, servers = await make_capability_gateway(tmp_path, creds=leak_check, extra=NOTES_GROUP)
    for agent in gateway.tokens:
        await gateway.client.get("/v1/whoami", headers=gateway.auth(agent))
    yield gateway
    await gateway.client.close()
    for server in servers:
        await server.close()


def _calls(value: str) -> list[tuple[str, str]]:
    """(raw target, JSON body) pairs that would record `value` (a JSON string's content)."""
    note, pct = "/v1/capabilities/push.note", "/v1/capabilities/pve.pct_status"
    return [
        (note, '{"text": "' + value + '"}'),  # logged param, refused by the guard
        (note, '{"text": "a", "' + value + '": 1}'),  # unknown parameter name
        (note, '{"' + value + '": 1, "' + value + '": 2}'),  # duplicate key
        (pct, '{"ctid": 101, "node": "' + value + '"}'),
        (f"/v1/capabilities/{value}", "{}"),
        ("/v1/explain", '{"capability": "push.note", "params": {"text": "' + value + '"}}'),
        ("/v1/explain", '{"capability": "' + value + '"}'),
        ("/v1/explain", '{"service": "git", "method": "GET", "path": "/", "' + value + '": 1}'),
    ]


@pytest.mark.parametrize("form", list(JSON_FORMS))
@pytest.mark.parametrize("secret", ["credential", "own-token", "other-agents-token"])
async def test_audit_hygiene_capability_records_hold_no_secret(
    capgw: CapGateway, secret: str, form: str
) -> None:
    value = {
        "credential": capgw.canaries["gitea-token"],
        "own-token": capgw.tokens["opencode"],
        "other-agents-token": capgw.tokens["ops/alice"],
    }[secret]
    encoded = JSON_FORMS[form](value)
    for target, body in _calls(encoded):
        url = URL(str(capgw.client.make_url("")).rstrip("/") + target, encoded=True)
        resp = await capgw.client.session.post(url, data=body.encode(), headers=capgw.auth())
        assert resp.status in {200, 400, 403, 404, 422, 502}, (target, await resp.text())
    records = capgw.audit()
    logged = [r for r in records if "TURRET_PARAMS" in r]
    assert logged, "the logged parameter was recorded (scrubbed)"
    secrets = [*capgw.canaries.values(), *capgw.tokens.values()]
    assert_no_secret_in_any_view(records, secrets)
