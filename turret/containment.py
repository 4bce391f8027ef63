"""Pure: how well the caller is contained, from what the kernel says of its process and what
systemd says of its unit.

A caller is `contained` when it cannot reach the network around Turret and cannot read Turret's
credentials: it has no network (a network namespace with no interface but `lo`, as
`PrivateNetwork=yes` makes; or, by its unit's properties, `IPAddressDeny=any` with nothing
allowed, or no internet or packet socket family), it can gain no privilege (`NoNewPrivs`), and
it runs neither as root nor as Turret's own user nor with capabilities that read any file.
Anything else is `uncontained`, with the systemd properties to change (`gaps`); a caller of
which nothing could be read is `unknown`.

The process's facts (`/proc/PID/status`, `/proc/PID/net/dev`) are read at accept with the
peer (`turret.peerid`), so they are the running process's, whatever its unit file says now. The
unit's properties come from `systemctl show`, where systemd answers Turret at all (dbus-daemon
refuses connections from a DynamicUser= service: then only the process's facts count).
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


@dataclass(frozen=True)
class ProcessFacts:
    """What the kernel shows of the peer process: its network interfaces (in its network
    namespace), `NoNewPrivs`, and its permitted, effective and ambient capabilities."""

    interfaces: frozenset[str]
    no_new_privs: bool
    capabilities: int  # CapPrm | CapEff | CapAmb


# Capability bits (linux/capability.h) that read any file or another process's memory.
_READ_ANYTHING_BITS = (1 << 1) | (1 << 2) | (1 << 19) | (1 << 21)


def process_facts(status: str | None, net_dev: str | None) -> ProcessFacts | None:
    """The facts of `/proc/PID/status` and `/proc/PID/net/dev` texts; None if either is missing
    or not as the kernel writes it."""
    if status is None or net_dev is None:
        return None
    fields = dict(line.partition(":")[::2] for line in status.splitlines())
    try:
        caps = 0
        for name in ("CapPrm", "CapEff", "CapAmb"):
            caps |= int(fields[name].strip(), 16)
        no_new_privs = fields["NoNewPrivs"].strip() == "1"
    except (KeyError, ValueError):
        return None
    lines = net_dev.splitlines()
    if len(lines) < 2 or "|" not in lines[0]:
        return None
    interfaces = frozenset(line.partition(":")[0].strip() for line in lines[2:] if ":" in line)
    return ProcessFacts(interfaces, no_new_privs, caps)


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
        return f"the calling unit {unit or '(none)'} is not contained: {self.gaps[0]}"


UNKNOWN = Containment(Level.UNKNOWN)


class ContainmentSource(Protocol):
    """How the pipeline asks for a caller's containment (`turret.peerid.SystemdUnits`)."""

    async def containment(
        self, unit: str | None, uid: int | None, facts: ProcessFacts | None
    ) -> Containment:
        """The containment of a caller in `unit` that connected as `uid`, its process's
        `facts` read at accept."""


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


def network_gap(props: Mapping[str, str] | None, facts: ProcessFacts | None = None) -> str | None:
    """The property that lets the caller reach the network around Turret, None if nothing does."""
    if facts is not None and facts.interfaces <= {"lo"}:
        return None  # a network namespace with nothing in it but its own loopback
    props = props or {}
    own_netns = props.get("NetworkNamespacePath", "") == ""
    # A private network by the unit's word only counts when the process's own interfaces could
    # not be read: otherwise they have just said there is a network.
    if facts is None and props.get("PrivateNetwork") == "yes" and own_netns:
        return None
    if _no_network_families(props.get("RestrictAddressFamilies", "")):
        return None
    if _denies_everything(props.get("IPAddressDeny", "")):
        return "IPAddressAllow" if props.get("IPAddressAllow", "").strip() else None
    return "PrivateNetwork" if own_netns else "NetworkNamespacePath"


def assess(
    props: Mapping[str, str] | None,
    uid: int | None,
    turret_uid: int,
    facts: ProcessFacts | None = None,
) -> Containment:
    """The containment of a caller that connected as `uid`, from its unit's properties
    `props` (None: systemd did not say) and its process's `facts` (None: not readable)."""
    if props is not None and props.get("LoadState") != "loaded":
        props = None  # not a unit systemd knows: its word on it is nothing
    if uid is None or (props is None and facts is None):
        return UNKNOWN
    gaps = []
    network = network_gap(props, facts)
    if network is not None:
        gaps.append(network)
    no_new_privs = facts.no_new_privs if facts else (props or {}).get("NoNewPrivileges") == "yes"
    if not no_new_privs:
        gaps.append("NoNewPrivileges")
    if uid in (0, turret_uid):
        gaps.append("User")  # root, or Turret's own user: its credentials are readable
    if _reads_anything(props, facts):
        # a root process has them from its bounding set, another from its ambient set
        gaps.append("CapabilityBoundingSet" if uid == 0 else "AmbientCapabilities")
    return Containment(Level.UNCONTAINED, tuple(gaps)) if gaps else Containment(Level.CONTAINED)


def _reads_anything(props: Mapping[str, str] | None, facts: ProcessFacts | None) -> bool:
    if facts is not None:
        return bool(facts.capabilities & _READ_ANYTHING_BITS)
    return bool(_READ_ANYTHING & set((props or {}).get("AmbientCapabilities", "").split()))
