"""The whole-Turret fixture of the admin tests (`served`), and a scrape of its `/metrics`."""

from __future__ import annotations

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from tests.admin.conftest import Served, served

__all__ = ["scrape", "series", "served"]


async def scrape(s: Served, socket: str | None = None) -> tuple[int, str, str]:
    """GET /metrics on the admin socket (or `socket`): status, content type, text."""
    connector = aiohttp.UnixConnector(socket or s.admin_socket)
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.get("http://turret/metrics") as resp,
    ):
        text = await resp.text()
        s.seen.append(text)
        return resp.status, resp.headers.get("Content-Type", ""), text


def series(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of an exposition: (name, sorted labels) -> value."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
