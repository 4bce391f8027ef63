"""One JSON error shape for every error path, with a matching status and X-Request-Id.

The 503 of a lost audit record is pinned with the same check in test_audit.py.
"""

from __future__ import annotations

import pytest

from tests.conftest import Gateway, assert_error

CASES = [
    (400, "bad_request", "GET", "/v1/proxy/gitea/a/../b", {}),
    (401, "unauthorized", "GET", "/v1/proxy/gitea/api/v1/user", {"Authorization": "Bearer x"}),
    (403, "forbidden", "DELETE", "/v1/proxy/gitea/api/v1/admin", {}),
    (404, "not_found", "GET", "/v2/nothing", {}),
    (405, "method_not_allowed", "POST", "/v1/whoami", {}),
    (422, "invalid_params", "POST", "/v1/explain", {"body": b'{"service": 1}'}),
    (413, "request_too_large", "POST", "/v1/proxy/gitea/api/v1/user", {"body": b"z" * 2000}),
    (502, "upstream_error", "GET", "/v1/proxy/gitea/big/100000", {}),
    (504, "upstream_timeout", "GET", "/v1/proxy/gitea/hang", {}),
]


@pytest.mark.parametrize(
    ("status", "code", "method", "target", "extra"), CASES, ids=[str(c[0]) for c in CASES]
)
async def test_error_shape(
    gateway: Gateway, *, status: int, code: str, method: str, target: str, extra: dict[str, object]
) -> None:
    body = extra.pop("body", None)
    resp = await gateway.request(method, target, headers=extra, data=body)
    await assert_error(resp, status, code)


async def test_success_carries_request_id(gateway: Gateway) -> None:
    resp = await gateway.request("GET", "/v1/proxy/gitea/api/v1/user")
    assert resp.status == 200 and len(resp.headers["X-Request-Id"]) == 16
