"""A fake upstream for the end-to-end test, run in the container's network namespace.

It answers which canary credential it was sent (a name, never the value), and its /slow endpoint
waits until the test posts /control/release, so the test decides when a slow request ends.
Prints its port on stdout once listening. Canary values come in through the environment.
"""

from __future__ import annotations

import asyncio
import hmac
import os

from aiohttp import web

ENTERED = web.AppKey("entered", asyncio.Event)
RELEASE = web.AppKey("release", asyncio.Event)


def credential_name(request: web.Request) -> str:
    sent = {
        "gitea": request.headers.get("Authorization", ""),
        "vault": request.headers.get("X-Api-Key", ""),
    }
    expected = {"gitea": "Bearer " + os.environ["E2E_GITEA"], "vault": os.environ["E2E_VAULT"]}
    for name, value in sent.items():
        if value and hmac.compare_digest(value, expected[name]):
            return name
    return "none"


async def ping(request: web.Request) -> web.Response:
    return web.json_response({"credential": credential_name(request)})


async def slow(request: web.Request) -> web.Response:
    request.app[ENTERED].set()
    await request.app[RELEASE].wait()
    return web.json_response({"credential": credential_name(request), "slow": True})


async def state(request: web.Request) -> web.Response:
    return web.json_response({"entered": request.app[ENTERED].is_set()})


async def release(request: web.Request) -> web.Response:
    request.app[RELEASE].set()
    return web.json_response({"released": True})


async def main() -> None:
    app = web.Application()
    app[ENTERED], app[RELEASE] = asyncio.Event(), asyncio.Event()
    app.router.add_get("/ping", ping)
    app.router.add_get("/other", ping)
    app.router.add_get("/slow", slow)
    app.router.add_get("/control/state", state)
    app.router.add_post("/control/release", release)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    print(runner.addresses[0][1], flush=True)  # noqa: T201 - the test reads the port
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main())
