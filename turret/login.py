"""Sending a request with its service's credential, including services behind a WebUI login.

For `auth: {login: ...}` (qBittorrent) Turret logs in with `POST /api/v2/auth/login`, keeps the
session cookie in memory for that service, sends it with each request, and logs in again when
the service answers 403 (qBittorrent's answer for an expired session). The cookie is a
credential: it is never returned to an agent (the echo guard redacts it as well), never logged,
never audited.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from dataclasses import dataclass, field, replace
from urllib.parse import urlencode, urlsplit

import aiohttp
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from turret.config import Service
from turret.connector import SessionPool
from turret.echo import Redactor
from turret.errors import BadGateway, GatewayTimeout
from turret.runtime import Injection, Runtime
from turret.upstream import Outbound, UpstreamResponse, forward

LOGIN_PATH = "/api/v2/auth/login"
# qBittorrent < 5.2 calls its cookie SID; 5.2 and later QBT_SID_<port>.
SESSION_COOKIE = re.compile(r"SID|QBT_SID_[0-9]{1,5}")
_MAX_LOGIN_ANSWER = 4096


@dataclass
class Session:
    """One login: the cookie, and a redactor for it built once rather than per request."""

    fingerprint: bytes
    cookie: str  # "NAME=value", as sent back in the Cookie header
    guard: Redactor = field(init=False)

    def __post_init__(self) -> None:
        self.guard = Redactor([self.cookie.partition("=")[2], self.cookie])

    def __repr__(self) -> str:
        return "Session(<redacted>)"


@dataclass
class LoginSessions:
    """Session cookies per service name, held only in memory."""

    _sessions: dict[str, Session] = field(default_factory=dict)
    _locks: dict[str, asyncio.Lock] = field(default_factory=dict)

    def __repr__(self) -> str:
        return f"LoginSessions(services={sorted(self._sessions)})"

    async def get(
        self,
        http: aiohttp.ClientSession,
        service: Service,
        login: tuple[str, str],
        stale: Session | None = None,
    ) -> Session:
        """The service's login session, logging in first if there is none or it is `stale`.

        One login at a time per service, so a burst of calls after expiry logs in once.
        """
        fingerprint = hashlib.sha256("\0".join((service.url, *login)).encode()).digest()
        async with self._locks.setdefault(service.name, asyncio.Lock()):
            current = self._sessions.get(service.name)
            if current and current.fingerprint == fingerprint and current is not stale:
                return current
            self._sessions.pop(service.name, None)
            session = Session(fingerprint, await _login(http, service, login))
            self._sessions[service.name] = session
            return session


LOGINS = web.AppKey("logins", LoginSessions)


async def send_upstream(
    pool: SessionPool,
    sessions: LoginSessions,
    service: Service,
    runtime: Runtime,
    out: Outbound,
) -> UpstreamResponse:
    """Forward `out` to `service` with its credential, logging in first where it needs that.

    The client session is the one for the service's address policy, so the login goes through
    the same address checks as the request."""
    http = pool.session_for(service.address_policy)
    injection = runtime.injections[service.name]
    if injection.login is None:
        return await forward(http, service, injection, runtime.redactor, out)
    session = await sessions.get(http, service, injection.login)
    result = await _with_session(http, service, runtime, out, session)
    if result.status == 403:
        session = await sessions.get(http, service, injection.login, stale=session)
        result = await _with_session(http, service, runtime, out, session)
    return result


async def _with_session(
    http: aiohttp.ClientSession, service: Service, runtime: Runtime, out: Outbound, session: Session
) -> UpstreamResponse:
    injection = Injection({"Cookie": session.cookie})
    result = await forward(http, service, injection, runtime.redactor, out)
    guard = session.guard
    body, count = guard.redact(result.body)
    headers: CIMultiDict[str] = CIMultiDict()
    for name, value in result.headers.items():
        clean, n = guard.redact_text(value)
        headers.add(name, clean)
        count += n
    return replace(result, headers=headers, body=body, redactions=result.redactions + count)


async def _login(http: aiohttp.ClientSession, service: Service, login: tuple[str, str]) -> str:
    """Log in and return the session cookie; `BadGateway` if the service refuses."""
    parts = urlsplit(service.url)
    form = urlencode({"username": login[0], "password": login[1]})
    refused = BadGateway(f"service {service.name!r} refused Turret's login")
    try:
        async with http.post(
            URL(service.url + LOGIN_PATH, encoded=True),
            data=form.encode(),
            headers={
                "Content-Type": "application/x-www-form-urlencoded",
                # qBittorrent's CSRF check wants a Referer of its own origin, if any.
                "Referer": f"{parts.scheme}://{parts.netloc}",
            },
            allow_redirects=False,
            timeout=aiohttp.ClientTimeout(total=service.timeout),
        ) as resp:
            answer = await resp.content.read(_MAX_LOGIN_ANSWER)
            cookies = [(k, m.value) for k, m in resp.cookies.items() if SESSION_COOKIE.fullmatch(k)]
            status = resp.status
    except (TimeoutError, aiohttp.ServerTimeoutError):
        raise GatewayTimeout(f"service {service.name!r} did not answer Turret's login") from None
    except aiohttp.ClientError as exc:
        raise BadGateway(
            f"service {service.name!r} could not be reached for login",
            reason=f"login failure: {type(exc).__name__}",
        ) from None
    if status not in (200, 204) or answer.strip() == b"Fails." or not cookies:
        refused.reason = f"login refused: HTTP {status}"
        raise refused
    name, value = cookies[0]
    if not value or any(c in value for c in "\r\n\0;"):
        raise refused
    return f"{name}={value}"
