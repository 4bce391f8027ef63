"""Adapting aiohttp to the pipeline: a request as an `Incoming`, its I/O as an `Exchange`, a
`Reply` as a response."""

from __future__ import annotations

import asyncio

from aiohttp import web

from turret.errors import BadRequest, CredentialUnavailable, PayloadTooLarge, RequestTimeout
from turret.httpserver import connection_peer
from turret.model import CapabilityAction, Outbound, Service, UpstreamResponse
from turret.pipeline.request import Incoming, Reply
from turret.records import RequestAudit
from turret.runtime import Runtime
from turret.upstream import read_at_most, send
from turret.web.alerts import ALERTS
from turret.web.keys import REQUEST_ID, UPSTREAMS


def incoming(request: web.Request) -> Incoming:
    """What the agent sent, as the pipeline takes it: the raw target, never a decoded copy."""
    return Incoming(
        request.method,
        request.raw_path,
        request.headers,
        request.content_type,
        request.content_length,
        request[REQUEST_ID],
        connection_peer(request),
    )


def respond(reply: Reply) -> web.Response:
    """The aiohttp response for a pipeline `Reply`."""
    if reply.body is not None:
        return web.Response(status=reply.status, headers=reply.headers, body=reply.body)
    return web.json_response(reply.json, status=reply.status)


class AiohttpExchange:
    """The pipeline's I/O for one aiohttp request: its body and the app's upstream sessions."""

    def __init__(self, request: web.Request) -> None:
        self._request = request

    async def body(self, limit: int, within: float) -> bytes:
        """The request body, refused with 413 as soon as it exceeds `limit` bytes (counted after
        decompression) and with 408 if it has not arrived within `within` seconds."""
        request = self._request
        too_large = PayloadTooLarge(f"request body is larger than {limit} bytes")
        if request.content_length is not None and request.content_length > limit:
            raise too_large
        if not request.body_exists:
            return b""
        try:
            async with asyncio.timeout(within):
                data = await read_at_most(request.content, limit)
        except TimeoutError:
            raise RequestTimeout(f"request body did not arrive within {within:g} s") from None
        except web.RequestPayloadError:
            # The parser found the body undecodable (garbage gzip or deflate) after the head was
            # accepted: the agent's error, answered and audited like any other.
            raise BadRequest("request body could not be decoded") from None
        if data is None:
            raise too_large
        return data

    async def forward(
        self,
        runtime: Runtime,
        service: Service,
        out: Outbound,
        *,
        call: CapabilityAction | None = None,
        audit: RequestAudit | None = None,
    ) -> UpstreamResponse:
        """Send `out` to `service` with its credential (the single way out)."""
        provider, app = runtime.providers[service.name], self._request.app
        try:
            return await send(
                app[UPSTREAMS],
                provider,
                service,
                out,
                runtime.redactor,
                capability=call.capability.name if call else None,
                params=call.params if call else None,
                audit=audit,
            )
        except CredentialUnavailable as exc:
            app[ALERTS].failed(app, runtime, exc)  # the configured notification, rate limited
            raise
