"""Minted credentials die with the process that holds them: when the agents' app stops, every
outstanding lease is revoked at its source (`turret.providers.minting.revoke_all`), so a
restart leaves no token valid that no Turret knows about any more (leases are held in memory
only). Bounded in time: a source that does not answer cannot hold up the stop."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from turret.providers.minting import revoke_all
from turret.web.keys import CONTEXT

log = logging.getLogger("turret")
REVOKE_AT_EXIT_WITHIN = 5.0  # seconds


async def revoke_at_exit(app: web.Application) -> AsyncIterator[None]:
    """A cleanup context: on stop, revoke the leases of the current runtime (and those a
    reload retired), before the client sessions close."""
    yield
    ctx = app[CONTEXT]
    runtime = ctx.holder.current
    try:
        async with asyncio.timeout(REVOKE_AT_EXIT_WITHIN):
            await revoke_all(runtime.providers, ctx.auditor, runtime.retired)
    except TimeoutError:
        log.warning("not every minted credential was revoked within %g s", REVOKE_AT_EXIT_WITHIN)
