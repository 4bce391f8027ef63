"""A capability call as values: the request it sends, and the result its answer gives.

Pure: the pipeline decides and records first, the web layer sends; this module only fills in the
request template and turns the upstream's answer into the declared result.
"""

from __future__ import annotations

import hmac
import json
from dataclasses import dataclass
from typing import Any

from turret.capabilities.projection import needs_body, project
from turret.capabilities.template import build_request
from turret.echo import Redactor
from turret.errors import BadGateway, PayloadTooLarge, UpstreamStatus
from turret.model import JSON, Capability, Outbound, Params, Service, UpstreamResponse
from turret.records import Fields


@dataclass(frozen=True)
class CallResult:
    """What a capability call produced: the upstream status, the projected result, counts."""

    status: int
    result: JSON
    bytes_out: int
    bytes_in: int
    redactions: int


def audit_fields(capability: Capability, params: Params, key: bytes) -> Fields:
    """Audit fields for a call: the capability, a keyed hash of the parameters and, only for
    parameters the capability lists in `log_params`, their values."""
    canonical = json.dumps(
        {"capability": capability.name, "params": dict(params)},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=True,
    )
    shown = {n: params[n] for n in capability.log_params if n in params}
    return {
        "TURRET_CAPABILITY": capability.name,
        "TURRET_PARAMS_HMAC": hmac.new(key, canonical.encode(), "sha256").hexdigest(),
        "TURRET_PARAMS": json.dumps(shown, sort_keys=True) if shown else None,
    }


def outbound_for(capability: Capability, params: Params, service: Service) -> Outbound:
    """The request a call with checked `params` sends to `service`."""
    out = build_request(capability, params)
    if len(out.body) > service.max_request_bytes:
        raise PayloadTooLarge(f"the request would be larger than {service.max_request_bytes} bytes")
    return out


def call_result(
    capability: Capability, out: Outbound, response: UpstreamResponse, redactor: Redactor
) -> CallResult:
    """What the call produced, from the upstream's answer: its status checked, its body
    projected to the result the capability declares, and redacted; or a `RequestError`."""
    if not 200 <= response.status < 300:
        raise UpstreamStatus(f"{capability.name}: the service answered HTTP {response.status}")
    if capability.ok_text is not None and response.body.strip() != capability.ok_text.encode():
        raise BadGateway(f"{capability.name}: the service did not confirm the action")
    result: JSON = {}
    if needs_body(capability.result):
        assert capability.result is not None  # noqa: S101 - needs_body checked it
        result = project(capability.result, _decoded(capability, response.body))
    clean, count = redact_json(result, redactor)
    return CallResult(
        response.status, clean, len(response.body), len(out.body), response.redactions + count
    )


def _decoded(capability: Capability, body: bytes) -> JSON:
    try:
        value: Any = json.loads(body, parse_constant=lambda _: None)
    except (ValueError, RecursionError):
        raise BadGateway(f"{capability.name}: the service's answer is not JSON") from None
    return value  # type: ignore[no-any-return]


def redact_json(value: JSON, redactor: Redactor) -> tuple[JSON, int]:
    """`value` with every credential form in its strings replaced; and how many were.

    The upstream body was redacted as bytes already; this catches a credential that JSON
    escapes (`\\u0041`) hid from that pass and decoding revealed.
    """
    if isinstance(value, str):
        data, n = redactor.redact(value.encode("utf-8", "surrogatepass"))
        return (data.decode("utf-8", "replace"), n) if n else (value, 0)
    if isinstance(value, list):
        items = [redact_json(v, redactor) for v in value]
        return [v for v, _ in items], sum(n for _, n in items)
    if isinstance(value, dict):
        total = 0
        out: dict[str, JSON] = {}
        for key, inner in value.items():
            clean_key, n = redact_json(key, redactor)
            clean, m = redact_json(inner, redactor)
            out[str(clean_key)] = clean
            total += n + m
        return out, total
    return value, 0
