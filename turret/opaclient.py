"""Asking OPA: one `POST /v1/data/<path>` per decision, over TCP or a unix socket.

`OpaClient.ask` never raises: every failure to get an answer (timeout, no connection, a broken
answer) is a `Verdict` that denies, with its reason code (`turret.opa`). Redirects are not
followed (a redirect is a deny), no proxy is taken from the environment, no cookies are kept,
and the answer is read up to `turret.opa.MAX_ANSWER_BYTES`. One client session per OPA address,
made on first use and closed with the app.
"""

from __future__ import annotations

import aiohttp

from turret.opa import MAX_ANSWER_BYTES, OpaSettings, Verdict, refusal, verdict
from turret.upstream import read_at_most

UNIX_ORIGIN = "http://opa"  # the Host of a request on a unix socket


class OpaClient:
    """The web layer's `PolicyOracle`: asks OPA's Data API."""

    def __init__(self) -> None:
        self._sessions: dict[str, aiohttp.ClientSession] = {}

    def _session(self, url: str) -> aiohttp.ClientSession:
        session = self._sessions.get(url)
        if session is None:
            connector: aiohttp.BaseConnector = (
                aiohttp.UnixConnector(url[len("unix:") :])
                if url.startswith("unix:")
                else aiohttp.TCPConnector(use_dns_cache=False)
            )
            session = self._sessions[url] = aiohttp.ClientSession(
                connector=connector, trust_env=False, cookie_jar=aiohttp.DummyCookieJar()
            )
        return session

    async def ask(self, settings: OpaSettings, query: bytes) -> Verdict:
        """OPA's verdict on `query` (the `{"input": ...}` body), within `settings.timeout`."""
        origin = UNIX_ORIGIN if settings.url.startswith("unix:") else settings.url
        timeout = aiohttp.ClientTimeout(total=settings.timeout)
        try:
            async with self._session(settings.url).post(
                origin + settings.query_path,
                data=query,
                headers={"Content-Type": "application/json", "Accept": "application/json"},
                allow_redirects=False,
                timeout=timeout,
            ) as resp:
                body = await read_at_most(resp.content, MAX_ANSWER_BYTES)
                status = resp.status
        except TimeoutError:
            return refusal("opa_timeout")
        except aiohttp.ClientConnectorError:
            return refusal("opa_unreachable")
        except (aiohttp.ClientError, OSError):
            return refusal("opa_bad_answer")
        if body is None:
            return refusal("opa_answer_too_large")
        return verdict(status, body)

    async def close(self) -> None:
        """Close every session."""
        for session in self._sessions.values():
            await session.close()
        self._sessions.clear()
