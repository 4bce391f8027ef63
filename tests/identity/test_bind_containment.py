"""The containment level of a caller's unit, from its systemd properties; `systemctl show` read
and cached per unit."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from turret.containment import (
    UNKNOWN,
    Containment,
    Level,
    assess,
    network_gap,
    parse_show,
)
from turret.peerid import SystemdUnits

TURRET_UID = 61234
AGENT_UID = 1000
CONTAINED = {
    "LoadState": "loaded",
    "PrivateNetwork": "yes",
    "NetworkNamespacePath": "",
    "IPAddressDeny": "",
    "IPAddressAllow": "",
    "RestrictAddressFamilies": "",
    "NoNewPrivileges": "yes",
    "AmbientCapabilities": "",
}
OPEN = {**CONTAINED, "PrivateNetwork": "no"}


@pytest.mark.parametrize(
    ("changes", "gap"),
    [
        ({}, None),
        # each way to have no network around Turret
        ({"PrivateNetwork": "no", "IPAddressDeny": "0.0.0.0/0 ::/0"}, None),
        ({"PrivateNetwork": "no", "IPAddressDeny": "any"}, None),
        ({"PrivateNetwork": "no", "RestrictAddressFamilies": "AF_UNIX"}, None),
        ({"PrivateNetwork": "no", "RestrictAddressFamilies": "AF_UNIX AF_NETLINK"}, None),
        ({"PrivateNetwork": "no", "RestrictAddressFamilies": "none"}, None),
        ({"PrivateNetwork": "no", "RestrictAddressFamilies": "~AF_INET AF_INET6 AF_PACKET"}, None),
        # and each way that is not one
        ({"PrivateNetwork": "no"}, "PrivateNetwork"),
        ({"PrivateNetwork": "no", "IPAddressDeny": "0.0.0.0/0"}, "PrivateNetwork"),  # v6 open
        ({"PrivateNetwork": "no", "IPAddressDeny": "::/0"}, "PrivateNetwork"),
        ({"PrivateNetwork": "no", "IPAddressDeny": "link-local multicast"}, "PrivateNetwork"),
        (
            {"PrivateNetwork": "no", "IPAddressDeny": "any", "IPAddressAllow": "127.0.0.0/8"},
            "IPAddressAllow",
        ),
        ({"PrivateNetwork": "no", "RestrictAddressFamilies": "AF_UNIX AF_INET"}, "PrivateNetwork"),
        (
            {"PrivateNetwork": "no", "RestrictAddressFamilies": "AF_UNIX AF_PACKET"},
            "PrivateNetwork",
        ),
        (
            {"PrivateNetwork": "no", "RestrictAddressFamilies": "~AF_INET AF_INET6"},
            "PrivateNetwork",
        ),
        ({"PrivateNetwork": "no", "RestrictAddressFamilies": "~AF_PACKET"}, "PrivateNetwork"),
        # a private network that is a namespace someone else set up (it may have a route out)
        ({"NetworkNamespacePath": "/run/netns/uplink"}, "NetworkNamespacePath"),
        ({}, None),
    ],
)
def test_network_gap_names_the_property_that_opens_the_network(
    changes: dict[str, str], gap: str | None
) -> None:
    assert network_gap({**CONTAINED, **changes}) == gap


def test_network_gap_of_a_unit_with_no_properties_is_open() -> None:
    assert network_gap({}) == "PrivateNetwork"


@pytest.mark.parametrize(
    ("props", "uid", "expected"),
    [
        (CONTAINED, AGENT_UID, Containment(Level.CONTAINED)),
        (OPEN, AGENT_UID, Containment(Level.UNCONTAINED, ("PrivateNetwork",))),
        (
            {**CONTAINED, "NoNewPrivileges": "no"},
            AGENT_UID,
            Containment(Level.UNCONTAINED, ("NoNewPrivileges",)),
        ),
        # root and Turret's own user can read Turret's credentials
        (CONTAINED, 0, Containment(Level.UNCONTAINED, ("User",))),
        (CONTAINED, TURRET_UID, Containment(Level.UNCONTAINED, ("User",))),
        (
            {**CONTAINED, "AmbientCapabilities": "cap_net_bind_service cap_dac_read_search"},
            AGENT_UID,
            Containment(Level.UNCONTAINED, ("AmbientCapabilities",)),
        ),
        (
            {**CONTAINED, "AmbientCapabilities": "cap_net_bind_service"},
            AGENT_UID,
            Containment(Level.CONTAINED),
        ),
        (
            {**OPEN, "NoNewPrivileges": "no"},
            0,
            Containment(Level.UNCONTAINED, ("PrivateNetwork", "NoNewPrivileges", "User")),
        ),
        # not loaded (a unit name systemd does not know), no properties, no uid: unknown
        ({**CONTAINED, "LoadState": "not-found"}, AGENT_UID, UNKNOWN),
        ({}, AGENT_UID, UNKNOWN),
        (CONTAINED, None, UNKNOWN),
    ],
)
def test_assess_levels(props: dict[str, str], uid: int | None, expected: Containment) -> None:
    assert assess(props, uid, TURRET_UID) == expected


def test_containment_refusal_names_the_first_gap() -> None:
    assert Containment(Level.CONTAINED).refusal("a.service") is None
    gaps = Containment(Level.UNCONTAINED, ("PrivateNetwork", "User"))
    assert (
        gaps.refusal("a.service") == "the calling unit a.service is not contained: PrivateNetwork"
    )
    assert UNKNOWN.refusal(None) == "the containment of the calling unit (none) is not known"


def test_parse_show_keeps_values_with_equals_signs_and_the_first_of_a_key() -> None:
    text = "PrivateNetwork=yes\nIPAddressDeny=0.0.0.0/0 ::/0\nX=a=b\nX=c\nnot a property\n"
    assert parse_show(text) == {
        "PrivateNetwork": "yes",
        "IPAddressDeny": "0.0.0.0/0 ::/0",
        "X": "a=b",
    }


def fake_systemctl(tmp_path: Path, body: str) -> tuple[str, Path]:
    """An executable standing in for systemctl: it logs its arguments and prints `body`."""
    log = tmp_path / "calls"
    script = tmp_path / "systemctl"
    script.write_text(f'#!/bin/sh\necho "$@" >> {log}\ncat <<"END"\n{body}END\n')
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return str(script), log


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_systemd_units_reads_systemctl_show_once_per_ttl(tmp_path: Path) -> None:
    body = "".join(f"{k}={v}\n" for k, v in CONTAINED.items())
    systemctl, log = fake_systemctl(tmp_path, body)
    clock = Clock()
    units = SystemdUnits(ttl=10, clock=clock, systemctl=systemctl, turret_uid=TURRET_UID)
    assert await units.containment("a.service", AGENT_UID) == Containment(Level.CONTAINED)
    assert await units.containment("a.service", 0) == Containment(Level.UNCONTAINED, ("User",))
    clock.now = 9.9
    await units.containment("a.service", AGENT_UID)
    assert len(log.read_text().splitlines()) == 1  # cached
    await units.containment("b.service", AGENT_UID)
    clock.now = 10.0
    await units.containment("a.service", AGENT_UID)
    calls = log.read_text().splitlines()
    assert len(calls) == 3
    # the unit name comes after "--": a name can never be read as an option
    assert calls[0].endswith("-- a.service") and calls[1].endswith("-- b.service")
    assert "-p LoadState,PrivateNetwork," in calls[0]


async def test_systemd_units_unknown_when_systemctl_fails_or_is_missing(tmp_path: Path) -> None:
    failing = tmp_path / "fail"
    failing.mkdir()
    script = failing / "systemctl"
    script.write_text("#!/bin/sh\necho PrivateNetwork=yes\nexit 1\n")
    script.chmod(0o755)
    assert await SystemdUnits(systemctl=str(script)).containment("a.service", 1) == UNKNOWN
    missing = SystemdUnits(systemctl=str(tmp_path / "nowhere" / "systemctl"))
    assert await missing.containment("a.service", 1) == UNKNOWN
