"""The built-in catalog: capabilities Turret knows for a service of a given `kind:`.

A service `work-matrix` of kind `matrix` gets `work-matrix.send_message` and so on. Each module
here follows the real API's documented requests and answers, and is tested against a fake
upstream that does the same.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from turret.capabilities.catalog import gitea, homeassistant, matrix, ntfy, proxmox, qbittorrent
from turret.model import Capability

if TYPE_CHECKING:
    from turret.model import Service

KINDS: dict[str, Callable[[Service], list[Capability]]] = {
    "gitea": gitea.capabilities,
    "homeassistant": homeassistant.capabilities,
    "matrix": matrix.capabilities,
    "ntfy": ntfy.capabilities,
    "proxmox": proxmox.capabilities,
    "qbittorrent": qbittorrent.capabilities,
}


def catalog_capabilities(service: Service) -> list[Capability]:
    """The catalog's capabilities for `service`, named `<service>.<action>`; [] without a kind."""
    return KINDS[service.kind](service) if service.kind else []
