"""Sending a request with its service's credential, including services behind a WebUI login.

For `auth: {login: ...}` (qBittorrent) Turret logs in with `POST /api/v2/auth/login`, keeps the
session cookie in memory for that service, sends it with each request, and logs in again when
the service answers 403 (qBittorrent's answer for an expired session). The cookie is a
credential: it is never returned to an agent (the echo guard redacts it as well), never logged,
never audited.

A failed login is not retried on every call. qBittorrent bans an address after
`WebUI\\MaxAuthenticationFailCount` failed logins (5 by default), and Turret's address is the
host's loopback: so after a failure Turret backs off (1 s, 2 s, 4 s ... up to 5 minutes), answers
calls meanwhile with 503 without contacting the service, and after `WRONG_CREDENTIAL_TRIES`
answers of "wrong credentials" stops trying until the credential or the service URL changes.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from urllib.parse import urlencode, urlsplit

import aiohttp
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from turret.config import Service
from turret.connector import SessionPool
from turret.echo import Redactor
from turret.errors import BadGateway, GatewayTimeout, RequestError, ServiceUnavailable
from turret.runtime import Injection, Runtime
from turret.upstream import Outbound, UpstreamResponse, forward

LOGIN_PATH = "/api/v2/auth/login"
# qBittorrent < 5.2 calls its cookie SID; 5.2 and later QBT_SID_<port>.
SESSION_COOKIE = re.compile(r"SID|QBT_SID_[0-9]{1,5}")
_MAX_LOGIN_ANSWER = 4096
BACKOFF_FIRST = 1.0  # seconds before the first retry after a failed login; doubled per failure
BACKOFF_MAX = 300.0
# Below qBittorrent's default ban threshold of 5, leaving room for a restart of Turret.
WRONG_CREDENTIAL_TRIES = 2
# What qBittorrent answers a login from a banned address (HTTP 403).
_BANNED = b"banned"


class LoginFailed(Exception):
    """A login that did not work: why (`cause`, a fixed phrase) and the error for the agent."""

    def __init__(self, cause: str, error: RequestError) -> None:
        super().__init__(cause)
        self.cause = cause
        self.error = error


@dataclass(frozen=True)
class Backoff:
    """The failed logins in a row for one credential, and the time before which Turret waits."""

    fingerprint: bytes
    failures: int
    wrong: int  # how many of them the service answered "wrong credentials"
    until: float
    cause: str

    def __repr__(self) -> str:
        return f"Backoff(failures={self.failures}, cause={self.cause!r})"


def next_backoff(previous: Backoff | None, fingerprint: bytes, cause: str, now: float) -> Backoff:
    """The backoff after one more failed login (pure: the clock reading is passed in)."""
    failures = previous.failures + 1 if previous else 1
    wrong = (previous.wrong if previous else 0) + (cause == "wrong credentials")
    delay = min(BACKOFF_FIRST * 2 ** (failures - 1), BACKOFF_MAX)
    if cause == "banned":
        delay = BACKOFF_MAX
    if wrong >= WRONG_CREDENTIAL_TRIES:
        delay = math.inf  # another try could get the host's loopback banned
    return Backoff(fingerprint, failures, wrong, now + delay, cause)


def held_back(service: Service, backoff: Backoff, now: float) -> ServiceUnavailable | None:
    """The answer to a call while a failed login is backed off from, or None once it is over."""
    if now >= backoff.until:
        return None
    if math.isinf(backoff.until):
        wait = "Turret will not try again until the credential or the service's URL changes"
    else:
        wait = f"next attempt in {math.ceil(backoff.until - now)} s"
    return ServiceUnavailable(
        f"service {service.name!r}: Turret's login was refused ({backoff.cause}); {wait}",
        reason=f"login held back: {backoff.cause}",
    )


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
    """Session cookies and login backoffs per service name, held only in memory."""

    clock: Callable[[], float] = time.monotonic
    _sessions: dict[str, Session] = field(default_factory=dict)
    _locks: dict[str, asyncio.Lock] = field(default_factory=dict)
    _backoffs: dict[str, Backoff] = field(default_factory=dict)

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

        One login at a time per service, so a burst of calls after expiry logs in once; after
        a failed login, calls are refused without a new attempt until its backoff is over.
        """
        fingerprint = hashlib.sha256("\0".join((service.url, *login)).encode()).digest()
        async with self._locks.setdefault(service.name, asyncio.Lock()):
            current = self._sessions.get(service.name)
            if current and current.fingerprint == fingerprint and current is not stale:
                return current
            self._sessions.pop(service.name, None)
            backoff = self._backoffs.get(service.name)
            if backoff and backoff.fingerprint != fingerprint:
                backoff = None  # a new credential or URL: try it at once
            if backoff and (refusal := held_back(service, backoff, self.clock())):
                raise refusal
            try:
                cookie = await _login(http, service, login)
            except LoginFailed as failed:
                now = self.clock()
                self._backoffs[service.name] = next_backoff(backoff, fingerprint, failed.cause, now)
                raise failed.error from None
            self._backoffs.pop(service.name, None)
            session = Session(fingerprint, cookie)
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
    body, count = await guard.redact_async(result.body)
    headers: CIMultiDict[str] = CIMultiDict()
    for name, value in result.headers.items():
        clean, n = guard.redact_text(value)
        headers.add(name, clean)
        count += n
    return replace(result, headers=headers, body=body, redactions=result.redactions + count)


async def _login(http: aiohttp.ClientSession, service: Service, login: tuple[str, str]) -> str:
    """Log in and return the session cookie; `LoginFailed` saying why if that did not work."""
    parts = urlsplit(service.url)
    form = urlencode({"username": login[0], "password": login[1]})
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
        cause = "upstream error (timeout)"
        message = f"service {service.name!r} did not answer Turret's login"
        raise LoginFailed(
            cause, GatewayTimeout(message, reason=f"login refused: {cause}")
        ) from None
    except aiohttp.ClientError as exc:
        cause = f"upstream error (unreachable: {type(exc).__name__})"
        message = f"service {service.name!r} could not be reached for login"
        raise LoginFailed(cause, BadGateway(message, reason=f"login refused: {cause}")) from None
    cookie = _cookie(cookies) if status in (200, 204) else None
    if cookie is not None and answer.strip() != b"Fails.":
        return cookie
    cause = _refusal_cause(status, answer)
    message = f"service {service.name!r} refused Turret's login: {cause}"
    raise LoginFailed(cause, BadGateway(message, reason=f"login refused: {cause}"))


def _cookie(cookies: list[tuple[str, str]]) -> str | None:
    if not cookies:
        return None
    name, value = cookies[0]
    if not value or any(c in value for c in "\r\n\0;"):
        return None
    return f"{name}={value}"


def _refusal_cause(status: int, answer: bytes) -> str:
    """Why a login answered by the service failed, as a fixed phrase (the answer is not quoted:
    it may reflect what Turret sent)."""
    if status == 200 and answer.strip() == b"Fails.":
        return "wrong credentials"
    if status == 403 and _BANNED in answer.lower():
        return "banned"
    if status in (200, 204):
        return "upstream error (no session cookie)"
    return f"upstream error (HTTP {status})"
