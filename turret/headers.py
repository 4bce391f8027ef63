"""Header and parameter rules for what goes upstream: which caller headers pass, how the
credential is put in, which query parameters and method overrides are refused. Pure.
"""

from __future__ import annotations

import re
from collections.abc import Set as AbstractSet
from urllib.parse import unquote_plus

from multidict import CIMultiDict, CIMultiDictProxy

from turret.authkinds import Injection

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
# Caller headers that never go upstream: credentials, routing, framing. Accept-Encoding is ours
# to choose, so the response is always in an encoding we can decode and inspect.
DROP_REQUEST = HOP_BY_HOP | {
    "authorization",
    "cookie",
    "cookie2",
    "host",
    "forwarded",
    "x-real-ip",
    "content-length",
    # Turret's server decodes a compressed request body (so the exfiltration guard and the size
    # limit see what it holds) and sends it upstream decoded.
    "content-encoding",
    "accept-encoding",
    "expect",
    "x-request-id",
    # Method overrides would let a GET grant act as DELETE on upstreams that honour them.
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
}
DROP_RESPONSE = HOP_BY_HOP | {
    "set-cookie",
    "set-cookie2",
    "www-authenticate",
    "content-length",
    "content-encoding",
}


def header_key(name: str) -> str:
    """How upstreams compare header names: CGI-style ones read "X_Api_Key" as "X-Api-Key"."""
    return name.lower().replace("_", "-")


def dropped(name: str, extra: AbstractSet[str]) -> bool:
    """True if a header called `name` never passes: hop-by-hop, proxy- or forwarding headers,
    or one of `extra`."""
    key = header_key(name)
    return key.startswith(("proxy-", "x-forwarded-")) or key in extra


def connection_named(headers: CIMultiDictProxy[str]) -> set[str]:
    """The headers a `Connection:` header names: hop-by-hop, so never passed on."""
    return {t.strip().lower() for v in headers.getall("Connection", ()) for t in v.split(",")}


def caller_headers(incoming: CIMultiDictProxy[str]) -> CIMultiDict[str]:
    """The caller's headers minus every one that must not go upstream."""
    drop = DROP_REQUEST | connection_named(incoming) if "Connection" in incoming else DROP_REQUEST
    out: CIMultiDict[str] = CIMultiDict()
    for name, value in incoming.items():
        if not dropped(name, drop):
            out.add(name, value)
    return out


def with_credential(headers: CIMultiDict[str], injection: Injection) -> CIMultiDict[str]:
    """`headers` with the injected credential, replacing any caller header of the same name."""
    if not injection.headers:
        return headers
    injected = {header_key(n) for n in injection.headers}
    out = CIMultiDict((n, v) for n, v in headers.items() if header_key(n) not in injected)
    out.update(injection.headers)
    return out


_OVERRIDE_PARAMS = frozenset({"_method", "x-http-method-override", "_http_method"})


def method_override_parameter(query: str, body: bytes, content_type: str) -> str | None:
    """The name of a method-override parameter (`_method=DELETE`) in the query or a form body.

    Frameworks such as Rails, Laravel and Express's methodOverride read these as the real
    method, which would let a grant for POST act as DELETE.
    """
    # Every name refused contains "method"; with escapes ("_%6Dethod") the query is always parsed.
    sources = [query] if "%" in query or "method" in query.lower() else []
    media_type = content_type.split(";", maxsplit=1)[0].strip().lower()
    if media_type == "application/x-www-form-urlencoded":
        sources.append(body.decode("latin-1"))
    names = [unquote_plus(part.partition("=")[0]) for s in sources for part in re.split("[&;]", s)]
    if media_type.startswith("multipart/"):
        # The same frameworks read the field of a multipart form as readily.
        names += _multipart_field_names(body.decode("latin-1"))
    for name in names:
        if name.strip().lower() in _OVERRIDE_PARAMS:
            return name.strip().lower()
    return None


_PART_NAME = re.compile(
    r"""^content-disposition:.*?;\s*name(\*?)\s*=\s*(?:"([^"]*)"|([^;\s]*))""",
    re.IGNORECASE | re.MULTILINE,
)


def _multipart_field_names(body: str) -> list[str]:
    """The `name=` of every part header in a multipart body (`name*=utf-8''x` decoded)."""
    names = []
    for m in _PART_NAME.finditer(body):
        value = m[2] if m[2] is not None else m[3]
        names.append(unquote_plus(value.rpartition("'")[2]) if m[1] else value)
    return names


def upstream_query(raw_query: str, injection: Injection) -> str:
    """The query string to send: the caller's, minus any parameter named like the injected one."""
    if injection.query is None:
        return raw_query
    name, value = injection.query
    # Some servers also split on ";" and read "key[]" or "key[x]" as "key": a parameter any of
    # them would take for the injected one is dropped.
    kept = [
        p
        for p in re.split("[&;]", raw_query)
        if p and unquote_plus(p.partition("=")[0]).partition("[")[0].lower() != name.lower()
    ]
    return "&".join([*kept, f"{name}={value}"])
