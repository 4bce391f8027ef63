"""qBittorrent WebUI API v2, behind its WebUI login (`auth: {login: ...}`)."""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING

from turret.capabilities.catalog._build import capability, each, fields
from turret.capabilities.magnet import MAX_LENGTH, magnet_problem, pattern
from turret.model import Capability, Param, Template

if TYPE_CHECKING:
    from turret.model import Service

CATEGORY = r"[A-Za-z0-9][A-Za-z0-9 _.-]{0,63}"


def capabilities(service: Service) -> list[Capability]:
    """add_torrent(magnet, category) and list_torrents(category)."""
    category = Param("category", "string", "qBittorrent category", required=False, pattern=CATEGORY)
    return [
        capability(
            service,
            "qbittorrent",
            "add_torrent",
            description="Add a torrent to qBittorrent from a magnet link.",
            params=(
                Param(
                    "magnet",
                    "string",
                    "A magnet: link with the info hash (xt) and optionally a name (dn)",
                    pattern=pattern(service.trackers),
                    max_length=MAX_LENGTH,
                    parse=partial(magnet_problem, trackers=frozenset(service.trackers)),
                ),
                category,
            ),
            request=Template(
                "POST",
                "/api/v2/torrents/add",
                body_kind="multipart",
                body={"urls": "{magnet}", "category": "{category}"},
            ),
            ok_text="Ok.",
        ),
        capability(
            service,
            "qbittorrent",
            "list_torrents",
            description="List the torrents in qBittorrent, optionally of one category.",
            params=(category,),
            request=Template("GET", "/api/v2/torrents/info", query=(("category", "{category}"),)),
            result=fields(
                torrents=each(
                    "",
                    fields(
                        hash="hash",
                        name="name",
                        state="state",
                        progress="progress",
                        size="size",
                        category="category",
                    ),
                    limit=500,
                )
            ),
        ),
    ]
