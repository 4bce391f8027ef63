"""Pure: how well the caller's systemd unit is contained, from its properties.

A unit is `contained` when it cannot reach the network around Turret and cannot read Turret's
credentials: it has no network (`PrivateNetwork=yes` in a namespace of its own, or
`IPAddressDeny=any` with nothing allowed, or no internet or packet socket families allowed), it
can gain no privilege (`NoNewPrivileges=yes`), and it runs neither as root nor as Turret's own
user nor with capabilities that read any file. Anything else is `uncontained`, with the
properties to change (`gaps`); a unit whose properties could not be read is `unknown`. The
properties come from `systemctl show` (`turret.peerid`).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

# What `systemctl show -p` is asked for.
PROPERTIES = (
    "LoadState",
    "PrivateNetwork",
    "NetworkNamespacePath",
    "IPAddressDeny",
    "IPAddressAllow",
    "RestrictAddressFamilies",
    "NoNewPrivileges",
    "AmbientCapabilities",
)
_NETWORK_FAMILIES = frozenset({"AF_INET", "AF_INET6", "AF_PACKET"})
_EVERYTHING = {"ipv4": {"0.0.0.0/0", "any"}, "ipv6": {"::/0", "any"}}
# Capabilities that read any file (Turret's credentials among them) or another process's memory.
_READ_ANYTHING = frozenset(
    {"cap_dac_override", "cap_dac_read_search", "cap_sys_ptrace", "cap_sys_admin"}
)


class Level(enum.Enum):
    """A containment level, as the audit records it (`TURRET_CONTAINMENT`)."""

    CONTAINED = "contained"
    UNCONTAINED = "uncontained"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class Containment:
    """A unit's containment level and the properties that keep it from `contained`."""

    level: Level
    gaps: tuple[str, ...] = ()

    def refusal(self, unit: str | None) -> str | None:
        """None if contained, else what the agent is told (naming the first gap)."""
        if self.level is Level.CONTAINED:
            return None
        if self.level is Level.UNKNOWN or not self.gaps:
            return f"the containment of the calling unit {unit or '(none)'} is not known"
        return f"the calling unit {unit} is not contained: {self.gaps[0]}"


UNKNOWN = Containment(Level.UNKNOWN)


class ContainmentSource(Protocol):
    """How the pipeline asks for a unit's containment (`turret.peerid.SystemdUnits`)."""

    async def containment(self, unit: str, uid: int | None) -> Containment:
        """The containment of `unit`, whose process connected with `uid`."""


def parse_show(text: str) -> dict[str, str]:
    """`systemctl show` output (`Key=Value` lines) as a mapping; the first of a repeated key."""
    props: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            props.setdefault(key, value)
    return props


def _no_network_families(value: str) -> bool:
    """Whether a `RestrictAddressFamilies=` value allows no internet or packet socket."""
    words = value.split()
    if not words:
        return False  # not restricted at all
    if words[0].startswith("~"):
        denied = {words[0][1:], *words[1:]}
        return denied >= _NETWORK_FAMILIES
    return words == ["none"] or not _NETWORK_FAMILIES & set(words)


def _denies_everything(value: str) -> bool:
    words = set(value.split())
    return all(words & forms for forms in _EVERYTHING.values())


def network_gap(props: Mapping[str, str]) -> str | None:
    """The property that lets the unit reach the network around Turret, None if nothing does."""
    own_netns = props.get("NetworkNamespacePath", "") == ""
    if props.get("PrivateNetwork") == "yes" and own_netns:
        return None
    if _no_network_families(props.get("RestrictAddressFamilies", "")):
        return None
    if _denies_everything(props.get("IPAddressDeny", "")):
        return "IPAddressAllow" if props.get("IPAddressAllow", "").strip() else None
    return "PrivateNetwork" if own_netns else "NetworkNamespacePath"


def assess(props: Mapping[str, str], uid: int | None, turret_uid: int) -> Containment:
    """The containment of a unit with properties `props` whose process connected as `uid`."""
    if props.get("LoadState") != "loaded" or uid is None:
        return UNKNOWN
    gaps = []
    network = network_gap(props)
    if network is not None:
        gaps.append(network)
    if props.get("NoNewPrivileges") != "yes":
        gaps.append("NoNewPrivileges")
    if uid in (0, turret_uid):
        gaps.append("User")  # root, or Turret's own user: its credentials are readable
    if _READ_ANYTHING & set(props.get("AmbientCapabilities", "").split()):
        gaps.append("AmbientCapabilities")
    return Containment(Level.UNCONTAINED, tuple(gaps)) if gaps else Containment(Level.CONTAINED)
