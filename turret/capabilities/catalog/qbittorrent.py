"""qBittorrent WebUI API v2, behind its WebUI login (`auth: {login: ...}`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from turret.capabilities.catalog._build import capability, each, fields
from turret.capabilities.model import Capability, Param, Template

if TYPE_CHECKING:
    from turret.config import Service

# One magnet link: a BitTorrent info hash (v1 hex or base32, or v2 multihash), then plain
# `&key=value` parts. One link only: qBittorrent reads newlines in `urls` as separators.
MAGNET = (
    r"magnet:\?xt=urn:(btih:([0-9a-fA-F]{40}|[A-Z2-7]{32})|btmh:[0-9a-fA-F]{68})"
    r"(&[A-Za-z0-9._~%=+-]+)*"
)
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
                Param("magnet", "string", "A magnet: link", pattern=MAGNET, max_length=4096),
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
