"""The external policy decision (OPA's Data API), without I/O: the query and the verdict.

After Turret's own policy allows a proxied request or a capability call, `turret.pipeline.opa`
asks OPA (`POST /v1/data/<path>` with `{"input": ...}`, through `turret.opaclient`). Only a
result of `true`, or an object whose `allow` is `true`, allows; every other answer — false, no
result (an undefined rule), not JSON, another shape, an HTTP error, a redirect, a timeout, no
connection — denies, with a stable reason code. OPA can only narrow what Turret allows.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

MAX_ANSWER_BYTES = 64 * 1024  # a decision is small; a bigger answer is not one
MAX_REASON_CHARS = 200
ALLOWED = "opa_allowed"


@dataclass(frozen=True)
class OpaSettings:
    """`policy.opa:`: where OPA listens (`http://host:port` or `unix:/path`), the rule's path
    under `/v1/data/`, and how long Turret waits for its answer."""

    url: str
    path: str = "turret/allow"
    timeout: float = 0.5

    @property
    def query_path(self) -> str:
        """The Data API path of the rule."""
        return f"/v1/data/{self.path}"


@dataclass(frozen=True)
class Verdict:
    """OPA's answer as Turret reads it: allowed or not, a reason code (`opa_allowed`,
    `opa_denied`, `opa_undefined`, ...) and OPA's own `reason` text when it gave one (for the
    audit record only: it is never shown to the agent)."""

    allowed: bool
    code: str
    detail: str | None = None


def query(
    *,
    agent: str,
    token_id: str | None,
    kind: str,
    capability: str | None,
    params: Mapping[str, Any] | None,
    service: str,
    method: str | None,
    path: str | None,
    time: float,
) -> bytes:
    """The body of the Data API query: `{"input": {...}}` as JSON bytes."""
    doc = {
        "agent": agent,
        "token_id": token_id,
        "kind": kind,
        "capability": capability,
        "params": dict(params) if params is not None else None,
        "service": service,
        "method": method,
        "path": path,
        "time": time,
    }
    return json.dumps({"input": doc}, separators=(",", ":")).encode()


def refusal(code: str) -> Verdict:
    """A deny for a failure to get a decision at all (timeout, no connection, HTTP error)."""
    return Verdict(False, code)


def verdict(status: int, body: bytes) -> Verdict:
    """OPA's answer read strictly: 200 with a JSON object whose `result` is `true` or
    `{"allow": true, ...}`. Anything else is a deny; the code says which kind."""
    if 300 <= status < 400:
        return refusal("opa_redirect")
    if status != 200:
        return refusal("opa_http_error")
    if len(body) > MAX_ANSWER_BYTES:
        return refusal("opa_answer_too_large")
    try:
        doc = json.loads(body.decode("utf-8"), object_pairs_hook=_unique)
    except (UnicodeDecodeError, ValueError, RecursionError):
        return refusal("opa_not_json")
    if not isinstance(doc, dict):
        return refusal("opa_bad_shape")
    if "result" not in doc:
        return refusal("opa_undefined")  # the rule is not defined for this input
    return _result(doc["result"])


def _result(result: object) -> Verdict:
    if result is True:
        return Verdict(True, ALLOWED)
    if result is False:
        return Verdict(False, "opa_denied")
    if not isinstance(result, dict) or not isinstance(result.get("allow"), bool):
        return refusal("opa_bad_shape")  # 1, "true", null, a list: never read as an allow
    reason = result.get("reason")
    detail = reason[:MAX_REASON_CHARS] if isinstance(reason, str) else None
    return Verdict(result["allow"], ALLOWED if result["allow"] else "opa_denied", detail)


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object with each key once: `{"allow": false, "allow": true}` is ambiguous."""
    out = dict(pairs)
    if len(out) != len(pairs):
        raise ValueError("duplicate key")
    return out
