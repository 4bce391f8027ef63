"""Start the demo upstream and Turret on `demo.yaml`, then show how to try them."""

from __future__ import annotations

import asyncio
import hmac
import json
import sys
import tempfile
from collections.abc import Awaitable, Callable
from importlib import resources
from pathlib import Path

from aiohttp import web

from turret.audit import Auditor, default_sink
from turret.auth import new_token
from turret.errors import StartupError
from turret.server import ServeOptions, serve

UPSTREAM = ("127.0.0.1", 8422)
SECRET_KEY = web.AppKey("secret", str)


def demo_upstream(secret: str) -> web.Application:
    """A tiny notes API that insists on its bearer token, and has a careless debug endpoint."""
    notes = [{"id": 1, "text": "Turret injected my credential; the agent never saw it."}]
    app = web.Application()
    app[SECRET_KEY] = secret

    @web.middleware
    async def require_token(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        expected = f"Bearer {request.app[SECRET_KEY]}"
        if not hmac.compare_digest(request.headers.get("Authorization", ""), expected):
            return web.json_response({"error": "bad upstream token"}, status=401)
        return await handler(request)

    async def list_notes(_: web.Request) -> web.Response:
        return web.json_response(notes)

    async def add_note(request: web.Request) -> web.Response:
        note = {"id": len(notes) + 1, "text": str((await request.json()).get("text", ""))}
        notes.append(note)
        return web.json_response(note, status=201)

    async def echo(request: web.Request) -> web.Response:
        # Reflects the request headers, credential included: Turret's echo guard redacts it.
        return web.json_response({"headers": dict(request.headers)})

    app.middlewares.append(require_token)
    app.router.add_get("/api/notes", list_notes)
    app.router.add_post("/api/notes", add_note)
    app.router.add_get("/api/debug/echo", echo)
    app.router.add_delete("/api/notes/{id}", list_notes)
    return app


async def main() -> None:
    with tempfile.TemporaryDirectory(prefix="turret-demo-") as tmp:
        creds = Path(tmp)
        secret, token = "demo-" + new_token(), new_token()
        (creds / "notes-api-token").write_text(secret)
        (creds / "demo-agent-token").write_text(token)
        runner = web.AppRunner(demo_upstream(secret), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, *UPSTREAM).start()
        config = resources.files("turret.demo") / "demo.yaml"
        state = creds / "state"  # derived tokens live in the state store
        state.mkdir(mode=0o700)
        _explain(token, str(config))
        options = ServeOptions(str(config), tmp, state_dir=str(state))
        try:
            await serve(options, Auditor(default_sink(None)))
        finally:
            await runner.cleanup()


def _explain(token: str, config: str) -> None:
    base = "http://127.0.0.1:8421"
    auth = f'-H "Authorization: Bearer {token}"'
    lease = json.dumps(
        {
            "ttl": "15m",
            "max_uses": 5,
            "description": "read-only helper",
            "proxy": [{"service": "notes", "methods": ["GET"], "paths": ["/api/notes"]}],
        }
    )
    print(
        f"""
Turret demo: config {config}
  demo upstream ("notes") on http://{UPSTREAM[0]}:{UPSTREAM[1]}, Turret on {base}
  demo agent token: {token}

Try, from another terminal:
  # who am I, and what may I do? (the capabilities come as tool definitions for an LLM)
  curl -s {auth} {base}/v1/whoami
  curl -s {auth} {base}/v1/capabilities
  # a typed capability: the agent names the action, Turret builds the request
  curl -s {auth} -d '{{"text": "hello from a capability"}}' {base}/v1/capabilities/notes.add
  # allowed: Turret injects the notes credential, which the agent never holds
  curl -s {auth} {base}/v1/proxy/notes/api/notes
  # the upstream reflects its request headers; the credential comes back [REDACTED]
  curl -s {auth} {base}/v1/proxy/notes/api/debug/echo
  # denied: DELETE is not granted (403, and nothing reaches the upstream)
  curl -s -X DELETE {auth} {base}/v1/proxy/notes/api/notes/1
  # refused: no token (401)
  curl -s {base}/v1/proxy/notes/api/notes
  # hand a sub-agent less: a 15-minute token that may only read the notes, 5 requests at most
  curl -s {auth} -d '{lease}' {base}/v1/tokens
  # ...use its "token" like your own: GET /api/notes works, POST is 403, a 6th request 401
  curl -s -H "Authorization: Bearer <the derived token>" {base}/v1/whoami
  # your derived tokens (never their values); revoke one and all it minted
  curl -s {auth} {base}/v1/tokens
  curl -s -X DELETE {auth} {base}/v1/tokens/<its id>

Audit records are printed below as JSON lines (journald when run under systemd). Ctrl-C stops.
""",
        flush=True,
    )


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except StartupError as exc:
        print(f"demo failed to start: {exc}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        pass
