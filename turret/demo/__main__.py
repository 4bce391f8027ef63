"""Start the demo upstream and Turret on `demo.yaml`, with an admin socket in the demo's
temporary directory, then show how to try them (as an agent, and as its operator)."""

from __future__ import annotations

import argparse
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

HOST, PORT, UPSTREAM_PORT = "127.0.0.1", 8421, 8422
SECRET_KEY = web.AppKey("secret", str)
# What the walkthrough's sub-agent token may do: read the notes, for 15 minutes, 5 times.
LEASE = {
    "ttl": "15m",
    "max_uses": 5,
    "description": "read-only helper",
    "proxy": [{"service": "notes", "methods": ["GET"], "paths": ["/api/notes"]}],
}


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

    async def remove_note(request: web.Request) -> web.Response:
        wanted = int(request.match_info["id"])
        notes[:] = [n for n in notes if n["id"] != wanted]
        return web.json_response({"id": wanted, "removed": True})

    async def echo(request: web.Request) -> web.Response:
        # Reflects the request headers, credential included: Turret's echo guard redacts it.
        return web.json_response({"headers": dict(request.headers)})

    app.middlewares.append(require_token)
    app.router.add_get("/api/notes", list_notes)
    app.router.add_post("/api/notes", add_note)
    app.router.add_get("/api/debug/echo", echo)
    app.router.add_delete("/api/notes/{id:[0-9]+}", remove_note)
    return app


def _config(tmp: Path, port: int, upstream_port: int) -> str:
    """The bundled `demo.yaml`, or a copy of it in `tmp` on other ports (`--port`)."""
    bundled = resources.files("turret.demo") / "demo.yaml"
    if (port, upstream_port) == (PORT, UPSTREAM_PORT):
        return str(bundled)
    text = bundled.read_text().replace(f"{HOST}:{UPSTREAM_PORT}", f"{HOST}:{upstream_port}")
    copy = tmp / "demo.yaml"
    copy.write_text(text.replace(f"{HOST}:{PORT}", f"{HOST}:{port}"))
    return str(copy)


async def main(port: int = PORT, upstream_port: int = UPSTREAM_PORT) -> None:
    """Run the demo until interrupted; its files live in a temporary directory."""
    with tempfile.TemporaryDirectory(prefix="turret-demo-") as tmp:
        creds = Path(tmp)
        secret, token = "demo-" + new_token(), new_token()
        (creds / "notes-api-token").write_text(secret)
        (creds / "demo-agent-token").write_text(token)
        runner = web.AppRunner(demo_upstream(secret), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, HOST, upstream_port).start()
        config = _config(creds, port, upstream_port)
        state = creds / "state"  # derived tokens, revocations and the seal live here
        state.mkdir(mode=0o700)
        # Turret's own uid may always use the admin socket: no root needed for the demo.
        admin_socket = str(creds / "admin.sock")
        _explain(token, config, f"http://{HOST}:{port}", f"http://{HOST}:{upstream_port}")
        _explain_operator(token, admin_socket, f"http://{HOST}:{port}")
        options = ServeOptions(config, tmp, state_dir=str(state), admin_socket=admin_socket)
        try:
            await serve(options, Auditor(default_sink(None)))
        finally:
            await runner.cleanup()


def _explain(token: str, config: str, base: str, upstream: str) -> None:
    auth = f'-H "Authorization: Bearer {token}"'
    lease = json.dumps(LEASE)
    print(
        f"""
Turret demo: config {config}
  demo upstream ("notes") on {upstream}, Turret on {base}
  demo agent token: {token}

Try, from another terminal:
  # who am I, and what may I do? (the capabilities come as tool definitions for an LLM)
  curl -s {auth} {base}/v1/whoami
  curl -s {auth} {base}/v1/capabilities
  # a typed capability: the agent names the action, Turret builds the request
  curl -s {auth} -d '{{"text": "hello from a capability"}}' {base}/v1/capabilities/notes.add
  # a call a person must approve: 202 with an approval id, and nothing sent upstream yet
  curl -s {auth} -d '{{"id": 1}}' {base}/v1/capabilities/notes.remove
  # ...once the operator approves it (below), this performs it, once, and gives its result
  curl -s {auth} "{base}/v1/approvals/<its approval_id>?wait=30"
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
""",
        flush=True,
    )


def _explain_operator(token: str, admin_socket: str, base: str) -> None:
    admin = f"--admin-socket {admin_socket}"
    print(
        f"""As the operator (the admin socket; your own uid may use it, no root needed):
  turret status {admin}
  turret tokens {admin}
  # stop the agent now: its next request is refused, 401 "revoked"
  turret revoke demo --reason "trying it out" {admin}
  curl -s -H "Authorization: Bearer {token}" {base}/v1/whoami
  turret unrevoke demo {admin}
  # calls held for approval, exactly as asked; approve (or `turret deny`) one
  turret approvals {admin}
  turret approve <approval_id> {admin}
  # each credential's keyed fingerprint, age and owner; a health check with it, now
  turret credentials {admin}
  turret check --all {admin}
  # Prometheus metrics (node_exporter: turret metrics --textfile PATH)
  turret metrics {admin}
  (after `make setup`, `turret` is `.venv/bin/turret`, or `source .venv/bin/activate`)

As an MCP server (an MCP client runs this command; it speaks MCP on stdin/stdout):
  TURRET_TOKEN={token} turret mcp --url {base}
  # e.g. Claude Code:
  claude mcp add turret -e TURRET_TOKEN={token} -- turret mcp --url {base}

Audit records are printed below as JSON lines (journald when run under systemd). Ctrl-C stops.
""",
        flush=True,
    )


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m turret.demo", description=__doc__)
    parser.add_argument("--port", type=int, default=PORT, help=f"Turret's port ({PORT})")
    parser.add_argument(
        "--upstream-port", type=int, default=UPSTREAM_PORT, help=f"the demo API's ({UPSTREAM_PORT})"
    )
    return parser.parse_args()


if __name__ == "__main__":
    args = _arguments()
    try:
        asyncio.run(main(args.port, args.upstream_port))
    except StartupError as exc:
        print(f"demo failed to start: {exc}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        pass
