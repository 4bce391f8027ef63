"""The credential provider of services behind a WebUI login (qBittorrent).

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
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlencode, urlsplit

import aiohttp
from yarl import URL

from turret.authkinds import Injection
from turret.echo import Redactor
from turret.errors import BadGateway, GatewayTimeout, RequestError, ServiceUnavailable
from turret.model import Service
from turret.providers import ProviderBase, Scope, digest, fingerprint

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
    """One login: the cookie, and its redactor and injection, built once rather than per call."""

    fingerprint: bytes
    cookie: str  # "NAME=value", as sent back in the Cookie header
    guard: Redactor = field(init=False)
    injection: SessionInjection = field(init=False)

    def __post_init__(self) -> None:
        self.guard = Redactor([self.cookie.partition("=")[2], self.cookie])
        self.injection = SessionInjection({"Cookie": self.cookie}, session=self)

    def __repr__(self) -> str:
        return "Session(<redacted>)"


@dataclass
class LoginState:
    """One service's login: its session, its backoff, and the lock that makes a burst of calls
    log in once. Held only in memory, and handed from one runtime to the next on reload."""

    clock: Callable[[], float] = time.monotonic
    session: Session | None = None
    backoff: Backoff | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    logged_in_at: float | None = None  # wall-clock time of the session's login

    def __repr__(self) -> str:
        return f"LoginState(session={self.session is not None}, backoff={self.backoff!r})"


@dataclass(frozen=True, repr=False)  # Injection's repr, which hides the values
class SessionInjection(Injection):
    """The Cookie header of one login session, with the session it came from."""

    session: Session | None = field(default=None, compare=False)


class LoginProvider(ProviderBase):
    """A service behind qBittorrent's WebUI login: hands out the session cookie, logging in
    (through the request's own client session, `Scope.via`) when there is none, and again when
    the service answers 403."""

    def __init__(
        self, service: Service, login: tuple[str, str], state: LoginState | None = None
    ) -> None:
        self.name = service.name
        self.service = service
        self.state = state or LoginState()
        self._login = login
        self._built_at = time.time()
        self._credential = digest(service.url, *login)  # a new URL or credential: a new login

    def __repr__(self) -> str:
        return f"LoginProvider({self.name!r}, {self.state!r})"

    @property
    def loaded_at(self) -> float:
        """When the current session was logged in; when the provider was built, before that."""
        return self.state.logged_in_at or self._built_at

    @property
    def fingerprint(self) -> str:
        """A short, non-reversible id of the session cookie (of the credential before a login)."""
        session = self._current()
        return fingerprint(session.cookie) if session else self._credential.hex()[:8]

    def guarded(self) -> list[str]:
        """The password, and the session cookie (value, and as sent) while it is valid."""
        session = self._current()
        cookie = [session.cookie.partition("=")[2], session.cookie] if session else []
        return [self._login[1], *cookie]

    async def injection(self, scope: Scope) -> Injection:
        """The session cookie, logging in first if there is no session (or only an old one)."""
        return (await self._session(scope, None)).injection

    async def renew(self, scope: Scope, stale: Injection, status: int) -> Injection | None:
        """On 403 (qBittorrent's answer to an expired session), a new login's cookie."""
        if status != 403 or not isinstance(stale, SessionInjection):
            return None
        return (await self._session(scope, stale.session)).injection

    def response_guard(self, injection: Injection) -> Redactor | None:
        """The redactor of the session `injection` came from: its cookie is newer than the
        runtime's redactor."""
        session = injection.session if isinstance(injection, SessionInjection) else None
        return session.guard if session else None

    async def revoke(self) -> None:
        """Forget the session: the next call logs in again (qBittorrent keeps it until expiry)."""
        self.state.session = None

    def _current(self) -> Session | None:
        session = self.state.session
        return session if session and session.fingerprint == self._credential else None

    async def _session(self, scope: Scope, stale: Session | None) -> Session:
        """The login session, logging in first if there is none or it is `stale`.

        One login at a time per service, so a burst of calls after expiry logs in once; after
        a failed login, calls are refused without a new attempt until its backoff is over.
        """
        if scope.via is None:
            raise TypeError("a login needs the request's client session (Scope.via)")
        state, credential = self.state, self._credential
        async with state.lock:
            current = state.session
            if current and current.fingerprint == credential and current is not stale:
                return current
            state.session = None
            backoff = state.backoff
            if backoff and backoff.fingerprint != credential:
                backoff = None  # a new credential or URL: try it at once
            if backoff and (refusal := held_back(self.service, backoff, state.clock())):
                raise refusal
            try:
                cookie = await _login(scope.via, self.service, self._login)
            except LoginFailed as failed:
                state.backoff = next_backoff(backoff, credential, failed.cause, state.clock())
                raise failed.error from None
            state.backoff = None
            state.session = Session(credential, cookie)
            state.logged_in_at = time.time()
            return state.session


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
