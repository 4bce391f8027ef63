"""`python -m bench.minting`: what minting costs. Mint latency on a cache miss (JWT signed, a
token requested from a fake GitHub on loopback) and on a hit; requests/s through a cached
`github_app` provider against a static bearer credential, to the same upstream, in process.

Figures depend on the machine; the ratios are the point. The fake is the test suite's
(`tests.providers.fake_github`), which checks every token request as GitHub would.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from aiohttp import ClientSession
from aiohttp.resolver import ThreadedResolver
from aiohttp.test_utils import TestServer

from tests.pipeline.conftest import Recording
from tests.providers.fake_github import APP_ID, INSTALLATION, FakeGitHub, new_key, serve
from tests.providers.minters import request_audit
from turret.audit import Auditor, LineSink
from turret.auth import new_token, token_sha256
from turret.config import load_config
from turret.connector import SessionPool
from turret.providers import Scope
from turret.providers.build import build_runtime
from turret.providers.minting import MintingProvider
from turret.runtime import RuntimeHolder
from turret.web.app import create_app

SECONDS = 3.0
CONCURRENCY = 16


def config(api: str, token: str) -> str:
    return f"""
providers:
  gh-app: {{type: github_app, app_id: {APP_ID}, installation_id: {INSTALLATION},
           private_key: key, api_url: {api}}}
services:
  gh:
    url: {api}
    auth: {{provider: gh-app, scope: {{repositories: ["{{repo}}"]}}}}
  minted:
    url: {api}
    auth: {{provider: gh-app, scope: {{repositories: [tools]}}}}
  static:
    url: {api}
    auth: {{bearer: static-token}}
capabilities:
  gh.repo:
    service: gh
    description: Read one repository
    params: {{repo: {{type: string}}}}
    request: {{method: GET, path: "/repos/octo/{{repo}}"}}
agents:
  bench:
    token_sha256: {token_sha256(token)}
    limits: {{requests_per_second: 1000000, burst: 1000000, max_concurrent: 1024}}
    capabilities: ["gh.*"]
    proxy:
      - {{service: minted, methods: [GET], paths: ["/echo"]}}
      - {{service: static, methods: [GET], paths: ["/echo"]}}
"""


async def mint_latency(
    provider: MintingProvider, pool: SessionPool
) -> tuple[list[float], list[float]]:
    """Per-call seconds of `injection`: on a miss (a new repository each time) and on a hit."""
    audit = request_audit(Recording())
    misses, hits = [], []
    for i in range(100):
        scope = Scope("gh", "gh.repo", {"repo": f"r{i}"}, pool=pool, audit=audit)
        start = time.perf_counter()
        await provider.injection(scope)
        misses.append(time.perf_counter() - start)
    scope = Scope("gh", "gh.repo", {"repo": "r0"}, pool=pool, audit=audit)
    for _ in range(10000):
        start = time.perf_counter()
        await provider.injection(scope)
        hits.append(time.perf_counter() - start)
    return misses, hits


async def throughput(base: str, path: str, token: str) -> float:
    """Requests/s of GET `path` with CONCURRENCY clients for SECONDS."""
    done = 0
    end = time.monotonic() + SECONDS
    headers = {"Authorization": f"Bearer {token}"}
    async with ClientSession() as session:

        async def client() -> None:
            nonlocal done
            while time.monotonic() < end:
                async with session.get(base + path, headers=headers) as resp:
                    await resp.read()
                    if resp.status != 200:
                        raise RuntimeError(f"answered {resp.status}")
                done += 1

        await asyncio.gather(*(client() for _ in range(CONCURRENCY)))
    return done / SECONDS


def _ms(values: list[float], q: float) -> str:
    return f"{statistics.quantiles(values, n=100)[int(q) - 1] * 1000:.3f} ms"


async def main() -> None:
    pem, public = new_key()
    fake = FakeGitHub(public, time.time)
    token = new_token()
    with tempfile.TemporaryDirectory() as tmp:
        creds = Path(tmp)
        (creds / "key").write_text(pem)
        (creds / "static-token").write_text("static-bench-token")
        async for server in serve(fake):
            api = str(server.make_url("")).rstrip("/")
            runtime = build_runtime(load_config(config(api, token)), str(creds))
            app = create_app(RuntimeHolder(runtime), Auditor(LineSink.open(f"{tmp}/audit")))
            turret = TestServer(app, host="127.0.0.1")
            await turret.start_server()
            pool = SessionPool(ThreadedResolver())
            provider = runtime.providers["gh"]
            if not isinstance(provider, MintingProvider):
                raise TypeError("service gh should have a minting provider")
            misses, hits = await mint_latency(provider, pool)
            await pool.close()
            base = str(turret.make_url("")).rstrip("/")
            static = await throughput(base, "/v1/proxy/static/echo", token)
            minted = await throughput(base, "/v1/proxy/minted/echo", token)
            await turret.close()
    print(f"mint on a cache miss: median {_ms(misses, 50)}, p95 {_ms(misses, 95)} (n=100)")
    first, last = statistics.median(misses[:10]), statistics.median(misses[-10:])
    print(
        f"  of which the first 10 scopes: median {first * 1000:.1f} ms; the last 10 (with 90"
        f" live tokens in the guard): {last * 1000:.1f} ms"
    )
    print(f"mint on a cache hit:  median {_ms(hits, 50)}, p95 {_ms(hits, 95)} (n=10000)")
    print(f"static bearer:        {static:.0f} requests/s ({CONCURRENCY} clients, {SECONDS:g} s)")
    print(f"cached github_app:    {minted:.0f} requests/s ({minted / static:.0%} of static)")
    print(f"(token requests the fake GitHub answered: {len(fake.token_requests)})")


if __name__ == "__main__":
    asyncio.run(main())
