"""Health checks: one request per service, sent now with its credential, that proves the
credential works (`turret check`, and `turret rotate` after a new value is loaded).

Each check goes out exactly as an agent's request would: `upstream.send` with the service's
provider (so an enforced `max_age` refuses it too), its address policy, its limits and the echo
guard. Only the status is kept: the body could carry a secret and is never returned.
"""

from __future__ import annotations

from collections.abc import Sequence

from multidict import CIMultiDict

from turret.connector import SessionPool
from turret.errors import NotFound, RequestError
from turret.model import Outbound
from turret.paths import canonical_path
from turret.runtime import Runtime
from turret.upstream import send


def services_to_check(runtime: Runtime, names: Sequence[str] | None) -> list[str]:
    """The services asked for (every one when `names` is None), or 404 for an unknown one."""
    services = runtime.config.services
    if names is None:
        return sorted(services)
    for name in names:
        if name not in services:
            raise NotFound(f"no service {name!r} in the configuration")
    return sorted(set(names))


async def check_service(runtime: Runtime, pool: SessionPool, name: str) -> dict[str, object]:
    """Run service `name`'s health check: ok (None without a check), the status, or the error's
    code (`upstream_timeout`, `credential_unavailable`, ...)."""
    service = runtime.config.services[name]
    check = service.check
    doc: dict[str, object] = {"service": name, "check": None, "ok": None, "status": None}
    if check is None:
        return {**doc, "error": "no health check for this service (add check: to it)"}
    doc["check"] = f"{check.method} {check.path} -> {check.expect_status}"
    out = Outbound(check.method, canonical_path(check.path), "", CIMultiDict(), b"")
    try:
        answer = await send(pool, runtime.providers[name], service, out, runtime.redactor)
    except RequestError as exc:
        return {**doc, "ok": False, "error": exc.code}
    ok = answer.status == check.expect_status
    return {**doc, "ok": ok, "status": answer.status, "error": None if ok else "unexpected_status"}


async def run_checks(
    runtime: Runtime, pool: SessionPool, names: Sequence[str] | None
) -> list[dict[str, object]]:
    """Every requested service's check, one after another (a burst of logins helps nobody)."""
    return [await check_service(runtime, pool, n) for n in services_to_check(runtime, names)]
