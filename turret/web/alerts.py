"""Alerts of failed mints, sent through the configured capability as Turret itself.

When a request fails with `CredentialUnavailable`, `Alerter.failed` sends the config's
`alerts:` notification (say `ntfy.publish`) in the background, at most once per provider per
`alerts.every` seconds (its clock is injected). It goes out the one way everything goes out
(`turret.upstream.send`), with the alert service's own credential, and has its audit records
like any call: agent `turret`, a decision and an outcome. A failure to alert is recorded, never
raised: the request that failed has its answer already.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from aiohttp import web

from turret.capabilities.engine import outbound_for
from turret.capabilities.schema import validate_params
from turret.config.providers import fill
from turret.errors import AuditUnavailable, CredentialUnavailable, RequestError
from turret.policy import Decision
from turret.records import RequestAudit
from turret.runtime import Runtime
from turret.scrub import Scrubber
from turret.upstream import send
from turret.web.keys import CONTEXT, REQUEST_IDS, UPSTREAMS

log = logging.getLogger("turret")


@dataclass
class Alerter:
    """When each provider was last alerted about, and the alerts on their way."""

    clock: Callable[[], float] = time.monotonic
    last: dict[str, float] = field(default_factory=dict)
    sending: set[asyncio.Task[None]] = field(default_factory=set)

    def failed(self, app: web.Application, runtime: Runtime, exc: CredentialUnavailable) -> None:
        """Alert about `exc` unless its provider was alerted about within `alerts.every`."""
        settings = runtime.config.alerts
        if settings is None or not exc.provider:
            return
        now, previous = self.clock(), self.last.get(exc.provider)
        if previous is not None and now - previous < settings.every:
            return
        self.last[exc.provider] = now
        task = asyncio.ensure_future(_send(app, runtime, exc))
        self.sending.add(task)
        task.add_done_callback(self.sending.discard)

    async def settled(self) -> None:
        """Wait for the alerts on their way (tests; shutdown)."""
        while self.sending:
            await asyncio.gather(*self.sending, return_exceptions=True)


ALERTS = web.AppKey("alerts", Alerter)


async def alerts_ctx(app: web.Application) -> AsyncIterator[None]:
    """Let alerts on their way finish (briefly) before the client sessions close."""
    yield
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(5):
            await app[ALERTS].settled()
    for task in app[ALERTS].sending:
        task.cancel()


async def _send(app: web.Application, runtime: Runtime, exc: CredentialUnavailable) -> None:
    settings = runtime.config.alerts
    if settings is None:
        return
    ctx = app[CONTEXT]
    capability = runtime.config.capabilities[settings.capability]
    fields: dict[str, str | int | float | None] = {
        "TURRET_REQUEST_ID": app[REQUEST_IDS].next(),
        "TURRET_AGENT": "turret",
        "TURRET_CAPABILITY": capability.name,
    }
    audit = RequestAudit(ctx.auditor, fields, Scrubber(runtime.redactor, ctx.tokens, b""))
    values: dict[str, object] = {
        "provider": exc.provider,
        "service": exc.service,
        "cause": exc.cause,
    }
    try:
        filled = fill(dict(settings.params), values)
        params = validate_params(capability, filled if isinstance(filled, dict) else {})
        audit.decision(Decision.allow(f"alert: credential minting failing: {exc.provider}"))
        service = runtime.config.services[capability.service]
        out = outbound_for(capability, params, service)
        result = await send(
            app[UPSTREAMS],
            runtime.providers[service.name],
            service,
            out,
            runtime.redactor,
            capability=capability.name,
            params=params,
            audit=audit,
        )
        audit.outcome(result.status, "alert sent" if result.status < 300 else "alert refused", {})
    except RequestError as failure:
        with contextlib.suppress(AuditUnavailable):
            audit.outcome(failure.status, f"alert not sent: {failure.reason}", {})
    except AuditUnavailable:
        log.exception("the alert about provider %s was not sent: audit unavailable", exc.provider)
