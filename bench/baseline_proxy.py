"""The smallest aiohttp proxy worth comparing with: check a bearer token, inject a header, forward.

It shows what aiohttp itself costs on this machine, so that Turret's own overhead (canonical
paths, policy, audit, header rules, echo guard) can be seen apart from it. Secrets are read from
files, as Turret reads them, never from the command line.

    python -m bench.baseline_proxy --port 8080 --upstream http://127.0.0.1:8081 --credentials DIR
"""

from __future__ import annotations

import argparse
import hmac
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
from aiohttp import web

EXPECTED = web.AppKey("expected", bytes)
INJECTED = web.AppKey("injected", str)
UPSTREAM = web.AppKey("upstream", str)
SESSION = web.AppKey("session", aiohttp.ClientSession)
PREFIX = "/v1/proxy/bench/"


def create_app(upstream: str, agent_token: str, upstream_secret: str) -> web.Application:
    """The proxy: `ANY /v1/proxy/bench/{tail}` goes to `upstream`/{tail} with the credential."""
    app = web.Application()
    app[EXPECTED] = f"Bearer {agent_token}".encode()
    app[INJECTED] = f"Bearer {upstream_secret}"
    app[UPSTREAM] = upstream
    app.cleanup_ctx.append(_session)
    app.router.add_route("*", PREFIX + "{tail:.*}", handle)
    return app


async def _session(app: web.Application) -> AsyncIterator[None]:
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=256), trust_env=False
    ) as session:
        app[SESSION] = session
        yield


async def handle(request: web.Request) -> web.Response:
    """Check the token, forward with the injected credential, return the whole response."""
    app = request.app
    given = request.headers.get("Authorization", "").encode()
    if not hmac.compare_digest(given, app[EXPECTED]):
        return web.json_response({"error": "missing or invalid agent token"}, status=401)
    url = app[UPSTREAM] + request.raw_path[len(PREFIX) - 1 :]
    body = await request.read()
    headers = {"Authorization": app[INJECTED]}
    if request.content_type:
        headers["Content-Type"] = request.content_type
    async with app[SESSION].request(
        request.method, url, headers=headers, data=body or None, allow_redirects=False
    ) as resp:
        data = await resp.read()
        return web.Response(status=resp.status, body=data, content_type=resp.content_type)


def main() -> None:
    """Serve on 127.0.0.1 until killed."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, help="default: the socket systemd passes (fd 3)")
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--credentials", required=True, metavar="DIR")
    args = parser.parse_args()
    creds = Path(args.credentials)
    token = (creds / "bench-agent-token").read_text().strip()
    secret = (creds / "bench-upstream-token").read_text().strip()
    app = create_app(args.upstream, token, secret)
    if args.port is None:  # socket-activated, as Turret is by turret.socket
        sock = socket.socket(fileno=3)
        web.run_app(app, sock=sock, access_log=None, print=None)
    else:
        web.run_app(app, host="127.0.0.1", port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
