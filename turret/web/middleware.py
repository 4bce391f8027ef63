"""Every request gets an id, every error the one JSON shape, every answer Turret's own banner."""

from __future__ import annotations

import logging
import traceback
from collections.abc import Awaitable, Callable

from aiohttp import HttpVersion10, HttpVersion11, hdrs, web
from aiohttp.http import SERVER_SOFTWARE

from turret.errors import (
    AuditUnavailable,
    BadRequest,
    MethodNotAllowed,
    NotFound,
    RequestError,
    ServiceUnavailable,
    TooManyRequests,
    error_body,
)
from turret.httpserver import SERVER_HEADER
from turret.pipeline.request import record_flood_summary, unrouted
from turret.scrub import scrub
from turret.web.keys import CONTEXT, REQUEST_ID, REQUEST_IDS, STATS
from turret.web.request import incoming

log = logging.getLogger("turret")
SUPPORTED_HTTP = frozenset({HttpVersion10, HttpVersion11})
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Give every request an id and turn every error into the JSON error shape."""
    request_id = request.app[REQUEST_IDS].next()
    request[REQUEST_ID] = request_id
    stats = request.app[STATS]
    stats.in_flight += 1
    try:
        record_flood_summary(request.app[CONTEXT])
        response = await _dispatch(request, handler)
    except RequestError as exc:
        response = error_response(exc, request_id)
    except AuditUnavailable:
        log.exception("audit unavailable; request %s refused", request_id)
        response = error_response(
            ServiceUnavailable("audit trail unavailable; request refused"), request_id
        )
    except Exception as exc:
        _log_internal_error(request, exc)
        response = error_response(RequestError("internal error"), request_id)
    finally:
        stats.in_flight -= 1
        stats.requests += 1
    response.headers["X-Request-Id"] = request_id
    return response


async def no_version_banner(_: web.Request, response: web.StreamResponse) -> None:
    """aiohttp fills in its banner before or after this hook, depending on its version; either
    way it is replaced. An upstream's own Server header (a proxied answer) is left as it is."""
    if response.headers.get(hdrs.SERVER, SERVER_SOFTWARE) == SERVER_SOFTWARE:
        response.headers[hdrs.SERVER] = SERVER_HEADER


def error_response(exc: RequestError, request_id: str) -> web.Response:
    """The JSON error shape for `exc`, with `Retry-After` for a 429."""
    response = web.json_response(error_body(exc.code, exc.message, request_id), status=exc.status)
    if isinstance(exc, TooManyRequests):
        response.headers["Retry-After"] = str(exc.retry_after)
    return response


def _log_internal_error(request: web.Request, exc: Exception) -> None:
    # An exception's message may quote what the agent sent: the traceback is scrubbed like an
    # audit field before it is logged.
    ctx = request.app[CONTEXT]
    text = "".join(traceback.format_exception(exc))
    runtime = ctx.holder.current
    scrubbed = scrub(text, runtime.redactor, ctx.tokens, tuple(runtime.live_guards()))
    log.error("internal error in request %s: %s", request[REQUEST_ID], scrubbed)


async def _dispatch(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.version not in SUPPORTED_HTTP:
        # HTTP/0.9 has no framing at all; other parsers would read the bytes differently.
        return await _unrouted(request, BadRequest("only HTTP/1.0 and HTTP/1.1 are supported"))
    try:
        return await handler(request)
    except web.HTTPException as exc:
        return await _unrouted(request, _from_http(exc))


async def _unrouted(request: web.Request, exc: RequestError) -> web.Response:
    answer = await unrouted(request.app[CONTEXT], incoming(request), exc)
    return error_response(answer, request[REQUEST_ID])


def _from_http(exc: web.HTTPException) -> RequestError:
    if exc.status == 405:
        return MethodNotAllowed("method not allowed for this endpoint")
    if exc.status == 404:
        return NotFound("no such endpoint")
    error = RequestError(exc.reason)
    error.status, error.code = exc.status, "http_error"
    return error
