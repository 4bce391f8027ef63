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
    ProcessFacts,
    assess,
    network_gap,
    parse_show,
    process_facts,
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
    assert await units.containment("a.service", AGENT_UID, None) == Containment(Level.CONTAINED)
    assert await units.containment("a.service", 0, None) == Containment(
        Level.UNCONTAINED, ("User",)
    )
    clock.now = 9.9
    await units.containment("a.service", AGENT_UID, None)
    assert len(log.read_text().splitlines()) == 1  # cached
    await units.containment("b.service", AGENT_UID, None)
    clock.now = 10.0
    await units.containment("a.service", AGENT_UID, None)
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
    assert await SystemdUnits(systemctl=str(script)).containment("a.service", 1, None) == UNKNOWN
    missing = SystemdUnits(systemctl=str(tmp_path / "nowhere" / "systemctl"))
    assert await missing.containment("a.service", 1, None) == UNKNOWN


NET_DEV_HEAD = (
    "Inter-|   Receive                            |  Transmit\n"
    " face |bytes    packets errs drop fifo frame|bytes    packets errs drop fifo colls\n"
)
LO_ONLY = NET_DEV_HEAD + "    lo:       0       0    0    0    0     0        0       0    0    0\n"
WITH_ETH = LO_ONLY + "  eth0: 1234      10    0    0    0     0      567       5    0    0\n"


def status_text(nnp: str = "1", prm: str = "0", eff: str = "0", amb: str = "0") -> str:
    return (
        "Name:\tagent\nUid:\t1000\t1000\t1000\t1000\n"
        f"CapInh:\t0000000000000000\nCapPrm:\t{prm:0>16}\nCapEff:\t{eff:0>16}\n"
        f"CapBnd:\t00000000fcecbfff\nCapAmb:\t{amb:0>16}\nNoNewPrivs:\t{nnp}\nSeccomp:\t2\n"
    )


def test_process_facts_read_the_kernels_texts() -> None:
    facts = process_facts(status_text(), LO_ONLY)
    assert facts == ProcessFacts(frozenset({"lo"}), no_new_privs=True, capabilities=0)
    facts = process_facts(status_text("0", prm="4", amb="80000"), WITH_ETH)
    assert facts == ProcessFacts(frozenset({"lo", "eth0"}), False, 0x80004)
    assert process_facts(status_text(), NET_DEV_HEAD) == ProcessFacts(frozenset(), True, 0)


@pytest.mark.parametrize(
    ("status", "net_dev"),
    [
        (None, LO_ONLY),
        (status_text(), None),
        ("Name:\tx\n", LO_ONLY),  # fields missing
        (status_text(eff="zz"), LO_ONLY),
        (status_text(), "lo: 0 0\n"),  # not /proc/net/dev's header
        ("", ""),
    ],
)
def test_process_facts_of_what_the_kernel_did_not_write_is_none(
    status: str | None, net_dev: str | None
) -> None:
    assert process_facts(status, net_dev) is None


SEALED = ProcessFacts(frozenset({"lo"}), no_new_privs=True, capabilities=0)
ON_NET = ProcessFacts(frozenset({"lo", "eth0"}), no_new_privs=True, capabilities=0)


@pytest.mark.parametrize(
    ("props", "facts", "expected"),
    [
        # the process's own facts, when systemd did not answer
        (None, SEALED, Containment(Level.CONTAINED)),
        (None, ON_NET, Containment(Level.UNCONTAINED, ("PrivateNetwork",))),
        (None, ProcessFacts(frozenset(), True, 0), Containment(Level.CONTAINED)),
        (
            None,
            ProcessFacts(frozenset({"lo"}), False, 0),
            Containment(Level.UNCONTAINED, ("NoNewPrivileges",)),
        ),
        # CAP_DAC_READ_SEARCH permitted (it could raise it), CAP_SYS_PTRACE ambient
        (
            None,
            ProcessFacts(frozenset({"lo"}), True, 1 << 2),
            Containment(Level.UNCONTAINED, ("AmbientCapabilities",)),
        ),
        (
            None,
            ProcessFacts(frozenset({"lo"}), True, 1 << 19),
            Containment(Level.UNCONTAINED, ("AmbientCapabilities",)),
        ),
        (None, ProcessFacts(frozenset({"lo"}), True, 1 << 10), Containment(Level.CONTAINED)),
        # the unit's word that it has a private network does not outweigh the process's
        # interfaces; its address filter or socket families, which /proc cannot show, do count
        (CONTAINED, ON_NET, Containment(Level.UNCONTAINED, ("PrivateNetwork",))),
        ({**OPEN, "IPAddressDeny": "any"}, ON_NET, Containment(Level.CONTAINED)),
        ({**OPEN, "RestrictAddressFamilies": "AF_UNIX"}, ON_NET, Containment(Level.CONTAINED)),
        # the kernel's NoNewPrivs over the unit's property
        ({**CONTAINED, "NoNewPrivileges": "no"}, SEALED, Containment(Level.CONTAINED)),
        # a unit systemd does not know: only the process's facts
        (
            {**OPEN, "LoadState": "not-found", "IPAddressDeny": "any"},
            ON_NET,
            Containment(Level.UNCONTAINED, ("PrivateNetwork",)),
        ),
        (None, None, UNKNOWN),
    ],
)
def test_assess_with_the_process_facts(
    props: dict[str, str] | None, facts: ProcessFacts | None, expected: Containment
) -> None:
    assert assess(props, AGENT_UID, TURRET_UID, facts) == expected


def test_assess_root_with_capabilities_names_its_bounding_set() -> None:
    every = ProcessFacts(frozenset({"lo"}), no_new_privs=True, capabilities=(1 << 41) - 1)
    expected = Containment(Level.UNCONTAINED, ("User", "CapabilityBoundingSet"))
    assert assess(None, 0, TURRET_UID, every) == expected
    stripped = ProcessFacts(frozenset({"lo"}), no_new_privs=True, capabilities=0)
    assert assess(None, 0, TURRET_UID, stripped) == Containment(Level.UNCONTAINED, ("User",))


async def test_systemd_units_not_asked_about_a_process_alone_in_its_netns(tmp_path: Path) -> None:
    systemctl, log = fake_systemctl(tmp_path, "LoadState=loaded\nPrivateNetwork=no\n")
    units = SystemdUnits(systemctl=systemctl, turret_uid=TURRET_UID)
    assert await units.containment("a.service", AGENT_UID, SEALED) == Containment(Level.CONTAINED)
    assert not log.exists()
    # with a network, the unit's properties are asked: here they open nothing more
    found = await units.containment("a.service", AGENT_UID, ON_NET)
    assert found == Containment(Level.UNCONTAINED, ("PrivateNetwork",))
    assert len(log.read_text().splitlines()) == 1
