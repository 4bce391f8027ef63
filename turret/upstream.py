"""The one place Turret talks to upstreams: header rules, credential injection, limits, echo guard.

`send` is the single way out: every request to an upstream (proxied, or a capability's) goes
through it, with the credential its service's provider hands out for that use.

The whole upstream response is read, within its size limit and the service timeout, before the
agent gets a status line: so a response is either complete and redacted, or an error, never a
truncated 200.
"""

from __future__ import annotations

from dataclasses import replace
from urllib.parse import urlsplit, urlunsplit

import aiohttp
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from turret.authkinds import Injection
from turret.connector import ACCEPT_ENCODING, FramingRefused, SessionPool
from turret.echo import Redactor
from turret.errors import AddressRefused, BadGateway, GatewayTimeout
from turret.headers import (
    DROP_RESPONSE,
    connection_named,
    dropped,
    upstream_query,
    with_credential,
)
from turret.model import Outbound, Params, Service, UpstreamResponse
from turret.providers import CredentialProvider, Scope
from turret.records import RequestAudit

_CHUNK = 64 * 1024


def response_headers(
    incoming: CIMultiDictProxy[str], redactor: Redactor
) -> tuple[CIMultiDict[str], int]:
    """Upstream headers safe to return, redacted; and how many redactions were made."""
    drop = (
        DROP_RESPONSE | connection_named(incoming) if "Connection" in incoming else DROP_RESPONSE
    )
    out: CIMultiDict[str] = CIMultiDict()
    fields = [(_as_sent(k), _as_sent(v)) for k, v in incoming.items()]
    # Scanned as the UTF-8 Turret's server writes: the bytes the agent will read.
    block = "\n".join(f"{k}\n{v}" for k, v in fields).encode()
    if not redactor.found(block):
        # The common case: nothing to redact, so only filter (and strip a redirect's userinfo).
        for name, value in fields:
            if not dropped(name, drop):
                out.add(name, _without_userinfo(value) if name.lower() == "location" else value)
        return out, 0
    total = 0
    for name, value in fields:
        if dropped(name, drop):
            continue
        if redactor.redact_text(name)[1]:
            total += 1  # a header whose very name carries a credential is dropped whole
            continue
        if name.lower() == "location":
            clean, n = redactor.redact_text(_without_userinfo(value))
        else:
            clean, n = redactor.redact_text(value)
        out.add(name, clean)
        total += n
    return out, total


def _as_sent(text: str) -> str:
    """A header name or value as the agent will receive it. aiohttp hands bytes that are not
    UTF-8 over as surrogate escapes, which its response writer silently drops, rejoining what
    they split ("CANA\\xe9RY" would reach the agent as "CANARY"): each becomes U+FFFD here, so
    the echo guard reads exactly what is sent."""
    if text.isascii():
        return text
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _without_userinfo(location: str) -> str:
    try:
        parts = urlsplit(location)
    except ValueError:
        return ""
    if "@" not in parts.netloc:
        return location
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


async def send(
    pool: SessionPool,
    provider: CredentialProvider,
    service: Service,
    out: Outbound,
    redactor: Redactor,
    *,
    capability: str | None = None,
    params: Params | None = None,
    audit: RequestAudit | None = None,
) -> UpstreamResponse:
    """Send `out` to `service` with the credential `provider` hands out, and return the whole
    answer, redacted; or raise a `RequestError`. `capability` and its validated `params` (None
    for the proxy) and the request's `audit` go to the provider in its `Scope`: a minting
    provider narrows the credential to them and records the issuance.

    The client session is the one for the service's address policy, and the provider gets it
    in its `Scope`, so a provider that logs in does so through the same address checks (and
    framing guard) as the request. An answer the provider recognises as an expired credential
    is retried once with the renewed one."""
    http = pool.session_for(service.address_policy)
    scope = Scope(
        service.name,
        capability,
        params or {},
        via=http,
        pool=pool,
        audit=audit,
        timeout=service.timeout,
    )
    injection = await provider.injection(scope)
    result = await _forward(http, service, injection, redactor, out)
    result = await _redacted(result, provider.response_guard(injection))
    renewed = await provider.renew(scope, injection, result.status)
    if renewed is not None:
        result = await _forward(http, service, renewed, redactor, out)
        result = await _redacted(result, provider.response_guard(renewed))
    return result


async def _redacted(result: UpstreamResponse, guard: Redactor | None) -> UpstreamResponse:
    """`result` redacted by a provider's guard for values newer than the runtime's redactor."""
    if guard is None:
        return result
    body, count = await guard.redact_async(result.body)
    # Each header is looked at on its own: in one text of them all, a decoded view could join
    # two of them (markup from a `<` in one to a `>` in another is read as removed, with the
    # encoded value in a header between).
    headers: CIMultiDict[str] = CIMultiDict()
    for name, value in result.headers.items():
        if guard.redact_text(name)[1]:
            count += 1  # a header whose very name carries the value is dropped whole
            continue
        clean, n = guard.redact_text(value)
        headers.add(name, clean)
        count += n
    return replace(result, headers=headers, body=body, redactions=result.redactions + count)


async def _forward(
    session: aiohttp.ClientSession,
    service: Service,
    injection: Injection,
    redactor: Redactor,
    out: Outbound,
) -> UpstreamResponse:
    """Send `out` to `service` with its credential and read the whole response, or raise a
    `RequestError`. The credential is added here, per request, never to the session."""
    query = upstream_query(out.query, injection)
    url = URL(service.url + out.path.encoded + (f"?{query}" if query else ""), encoded=True)
    timeout = aiohttp.ClientTimeout(total=service.timeout)
    headers = with_credential(out.headers, injection)
    # Only codings the response can be decoded from, so the echo guard reads what the agent gets.
    headers["Accept-Encoding"] = ACCEPT_ENCODING
    if injection.sign is not None:
        headers = CIMultiDict(injection.sign(out.method, str(url), headers, out.body))
    try:
        async with session.request(
            out.method,
            url,
            headers=headers,
            data=out.body or None,
            allow_redirects=False,
            timeout=timeout,
            auto_decompress=True,
        ) as resp:
            try:
                data = await _read_limited(resp, service.max_response_bytes)
            except BaseException:
                resp.close()  # never pool a connection whose answer was not read to its end
                raise
            out_headers, n_headers = response_headers(resp.headers, redactor)
            status = resp.status
    except (TimeoutError, aiohttp.ServerTimeoutError):
        raise GatewayTimeout(
            f"service {service.name!r} did not answer within {service.timeout:g} s"
        ) from None
    except aiohttp.ClientConnectorError as exc:
        if isinstance(exc.os_error, AddressRefused):
            raise BadGateway(
                f"service {service.name!r} resolves to an address its policy does not allow",
                reason=f"address policy refused: {exc.os_error}",
            ) from None
        raise BadGateway(
            f"service {service.name!r} could not be reached",
            reason=f"upstream failure: {type(exc).__name__}",
        ) from None
    except (aiohttp.ClientError, OSError) as exc:
        refused = exc.__cause__
        raise BadGateway(
            f"service {service.name!r} could not be reached or sent an invalid response",
            reason=f"upstream framing refused: {refused.message}"
            if isinstance(refused, FramingRefused)
            else f"upstream failure: {type(exc).__name__}",
        ) from None
    clean, n_body = await redactor.redact_async(data)  # a big body is scanned off the loop
    return UpstreamResponse(status, out_headers, clean, n_headers + n_body)


async def read_at_most(stream: aiohttp.StreamReader, limit: int) -> bytes | None:
    """The whole of `stream`, or None as soon as it is longer than `limit` bytes. Bytes are
    counted as read, after decompression, so a small compressed body cannot expand past it."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in stream.iter_chunked(_CHUNK):
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


async def _read_limited(resp: aiohttp.ClientResponse, limit: int) -> bytes:
    too_large = BadGateway("upstream response is larger than the service's max_response_bytes")
    if (
        resp.content_length is not None
        and resp.content_length > limit
        and not resp.headers.get("Content-Encoding")
    ):
        raise too_large
    data = await read_at_most(resp.content, limit)
    if data is None:
        raise too_large
    return data
