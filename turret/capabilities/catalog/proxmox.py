"""Proxmox VE API (`/api2/json`), with an API token.

The service's auth is `Authorization: PVEAPIToken=USER@REALM!TOKENID=SECRET`, a header auth with
`prefix: "PVEAPIToken="`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from turret.capabilities.catalog._build import capability, fields
from turret.model import Capability, Param, Template

if TYPE_CHECKING:
    from turret.model import Service

NODE = r"[A-Za-z0-9][A-Za-z0-9-]{0,62}"


def capabilities(service: Service) -> list[Capability]:
    """pct_status(ctid, node) and qemu_status(vmid, node); node defaults to the service's node."""
    node = Param(
        "node",
        "string",
        "Proxmox node name",
        required=service.node is None,
        default=service.node,
        pattern=NODE,
    )
    status = fields(
        status="data.status",
        name="data.name",
        vmid="data.vmid",
        uptime="data.uptime",
    )
    return [
        capability(
            service,
            "proxmox",
            "pct_status",
            description="Current status of a Proxmox LXC container (running, stopped, ...).",
            params=(
                Param("ctid", "integer", "Container ID", minimum=100, maximum=999999999),
                node,
            ),
            request=Template("GET", "/api2/json/nodes/{node}/lxc/{ctid}/status/current"),
            result=status,
        ),
        capability(
            service,
            "proxmox",
            "qemu_status",
            description="Current status of a Proxmox QEMU virtual machine (running, stopped, ...).",
            params=(
                Param("vmid", "integer", "VM ID", minimum=100, maximum=999999999),
                node,
            ),
            request=Template("GET", "/api2/json/nodes/{node}/qemu/{vmid}/status/current"),
            result=status,
        ),
    ]
