"""Every typed key of the web layer's application and request state (`web.AppKey`)."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from turret.connector import SessionPool
from turret.counters import RequestCounters
from turret.pipeline.request import Context
from turret.requestids import RequestIds


@dataclass
class Stats:
    """Counters for the status line."""

    requests: int = 0
    in_flight: int = 0


CONTEXT = web.AppKey("context", Context)
UPSTREAMS = web.AppKey("upstreams", SessionPool)
REQUEST_IDS = web.AppKey("request_ids", RequestIds)
STATS = web.AppKey("stats", Stats)
COUNTERS = web.AppKey("counters", RequestCounters)
REQUEST_ID = web.RequestKey("request_id", str)
