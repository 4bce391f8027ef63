"""Pure peer identification: the unit in a cgroup text (hostile ones too), start times, the
pid-reuse check, and what a binding allows."""

from __future__ import annotations

import pytest

from turret.model import Agent, Group, PeerBinding
from turret.peers import (
    MAX_CGROUP_TEXT,
    CgroupUnit,
    binding_refusal,
    bindings_of,
    cgroup_root,
    must_be_contained,
    same_process,
    start_ticks,
    unit_of_cgroup,
)

V1_OTHERS = "12:pids:/system.slice/x.service\n4:memory:/system.slice/x.service\n"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0::/system.slice/opencode.service\n", CgroupUnit("opencode.service")),
        ("0::/system.slice/opencode.service", CgroupUnit("opencode.service")),
        # a template instance and escaped characters are unit names too
        ("0::/system.slice/agent@a\\x2db.service\n", CgroupUnit("agent@a\\x2db.service")),
        # nested slices, and a unit's own sub-cgroups (Delegate=yes) below it
        ("0::/agents.slice/agents-llm.slice/opencode.service\n", CgroupUnit("opencode.service")),
        ("0::/system.slice/opencode.service/payload/deeper\n", CgroupUnit("opencode.service")),
        # a transient scope (systemd-run --scope, a login session)
        ("0::/user.slice/user-1000.slice/session-3.scope\n", CgroupUnit("session-3.scope")),
        ("0::/system.slice/run-r1234.scope\n", CgroupUnit("run-r1234.scope")),
        # a user manager's units: the system unit is the manager, the user unit below it
        (
            "0::/user.slice/user-1000.slice/user@1000.service/app.slice/opencode.service\n",
            CgroupUnit("user@1000.service", "opencode.service"),
        ),
        (
            "0::/user.slice/user-1000.slice/user@1000.service/init.scope\n",
            CgroupUnit("user@1000.service", "init.scope"),
        ),
        ("0::/user.slice/user-1000.slice/user@1000.service\n", CgroupUnit("user@1000.service")),
        # cgroup v1 (name=systemd), and a hybrid host where both agree
        (V1_OTHERS + "1:name=systemd:/system.slice/a.service\n0::/\n", CgroupUnit("a.service")),
        (
            V1_OTHERS + "1:name=systemd:/system.slice/a.service\n0::/system.slice/a.service\n",
            CgroupUnit("a.service"),
        ),
    ],
)
def test_unit_of_cgroup_reads_the_unit(text: str, expected: CgroupUnit) -> None:
    assert unit_of_cgroup(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "0::/\n",
        "0::/system.slice\n",  # only slices
        "0::/system.slice/../opencode.service\n",  # not a unit name after the slices
        "0::/system.slice/opencode\n",
        "0::/system.slice/opencode.socketx\n",
        "0::/system.slice/opencode.timer\n",  # no process runs in a timer
        "0::system.slice/opencode.service\n",  # not absolute
        "0::/machine.slice/pod/opencode.service\n",  # a non-unit cgroup before the unit
        # a line break in a cgroup name forging a second line for the same hierarchy
        "0::/user.slice/user-1000.slice/user@1000.service/x\n0::/system.slice/opencode.service\n",
        "1:name=systemd:/system.slice/a.service\n1:name=systemd:/system.slice/b.service\n",
        # a hybrid host whose hierarchies disagree
        "1:name=systemd:/system.slice/a.service\n0::/system.slice/b.service\n",
        "garbage without colons\n",
        "0::/system.slice/" + "a" * 300 + ".service\n",  # longer than a unit name may be
        "0::/system.slice/a b.service\n",  # a space is no unit name character
        "0::/system.slice/opencode.service\n" + "9:cpu:/x\n" * (MAX_CGROUP_TEXT // 8),
    ],
)
def test_unit_of_cgroup_refuses_what_is_not_unambiguous(text: str) -> None:
    assert unit_of_cgroup(text) is None


def test_unit_of_cgroup_user_made_system_slice_below_its_manager_is_the_manager() -> None:
    # A user may create cgroups below its own manager, named like system units: the unit is
    # still its manager's, never the name it made up.
    text = "0::/user.slice/user-1000.slice/user@1000.service/system.slice/opencode.service\n"
    found = unit_of_cgroup(text)
    assert found is not None and found.unit == "user@1000.service"
    # Its user unit is recorded as the user named it; a binding never matches on it.
    assert found.user_unit == "opencode.service"
    assert binding_refusal((BY_UNIT,), 1000, found.unit) is not None


def test_unit_of_cgroup_strips_the_root_systemd_runs_below() -> None:
    text = "0::/turret-e2e-1/system.slice/opencode.service\n"
    assert unit_of_cgroup(text) is None  # "turret-e2e-1" is not a slice or a unit
    assert unit_of_cgroup(text, "/turret-e2e-1") == CgroupUnit("opencode.service")
    assert unit_of_cgroup("0::/elsewhere/system.slice/a.service\n", "/turret-e2e-1") is None
    assert unit_of_cgroup("0::/turret-e2e-10/system.slice/a.service\n", "/turret-e2e-1") is None


@pytest.mark.parametrize(
    ("own", "root"),
    [
        ("0::/system.slice/turret.service\n", ""),
        ("0::/turret-e2e-1/system.slice/turret.service\n", "/turret-e2e-1"),
        ("1:name=systemd:/m/n/system.slice/turret.service\n0::/\n", "/m/n"),
        ("0::/\n", ""),
        ("0::/not-systemd/at-all\n", ""),
        ("", ""),
    ],
)
def test_cgroup_root_is_the_path_above_the_first_slice(own: str, root: str) -> None:
    assert cgroup_root(own) == root


def _stat(comm: str, start: str = "4242") -> str:
    fields = ["S", *["0"] * 18, start, "0"]  # fields 3..21, then 22 = starttime, then 23
    return f"123 ({comm}) " + " ".join(fields)


@pytest.mark.parametrize("comm", ["python3", "a b", "x) 1 2 3 (y", "))", ")S 0 0 0 0 0"])
def test_start_ticks_counts_fields_from_the_last_parenthesis(comm: str) -> None:
    assert start_ticks(_stat(comm)) == 4242


@pytest.mark.parametrize(
    "text", ["", "123 python3 S 1 2", _stat("p", "-1"), _stat("p", "x"), "123 (p)"]
)
def test_start_ticks_of_what_is_not_a_stat_line_is_none(text: str) -> None:
    assert start_ticks(text) is None


@pytest.mark.parametrize(
    ("before", "after", "accepted", "same"),
    [
        (100, 100, 100, True),  # started in the tick the connection was accepted in
        (100, 100, 500, True),
        (100, 101, 500, False),  # the pid was reused while its cgroup was read
        (600, 600, 500, False),  # started after the accept: reused before the first read
        (None, 100, 500, False),  # gone before the first read
        (100, None, 500, False),  # gone after
        (None, None, 500, False),
    ],
)
def test_same_process_decides_the_pid_reuse_check(
    before: int | None, after: int | None, accepted: int, *, same: bool
) -> None:
    assert same_process(before, after, accepted) is same


BY_UID = PeerBinding(uids=frozenset({1000}))
BY_UNIT = PeerBinding(units=frozenset({"opencode.service"}))
EITHER = PeerBinding(frozenset({1000, 1001}), frozenset({"opencode.service", "b.scope"}))


@pytest.mark.parametrize(
    ("bindings", "uid", "unit", "allowed"),
    [
        ((), None, None, True),  # unbound: anyone
        ((BY_UID,), 1000, None, True),
        ((BY_UID,), 1000, "other.service", True),
        ((BY_UID,), 1001, "opencode.service", False),
        ((BY_UID,), None, None, False),  # TCP
        ((BY_UID,), 0, None, False),  # root is not everyone's peer
        ((BY_UNIT,), 1000, "opencode.service", True),
        ((BY_UNIT,), 1000, "opencode.service.d", False),
        ((BY_UNIT,), 1000, "OPENCODE.service", False),
        ((BY_UNIT,), 1000, None, False),  # the unit could not be resolved: no match
        ((EITHER,), 1001, None, True),
        ((EITHER,), 7, "b.scope", True),
        ((EITHER,), 7, "c.scope", False),
        # the agent's and a group's bindings: both must allow
        ((BY_UID, BY_UNIT), 1000, "opencode.service", True),
        ((BY_UID, BY_UNIT), 1000, "x.service", False),
        ((BY_UID, BY_UNIT), 1001, "opencode.service", False),
    ],
)
def test_binding_refusal_allows_any_entry_of_every_binding(
    bindings: tuple[PeerBinding, ...], uid: int | None, unit: str | None, *, allowed: bool
) -> None:
    refusal = binding_refusal(bindings, uid, unit)
    assert (refusal is None) is allowed
    if refusal is not None:
        shown = "-" if uid is None else uid
        assert refusal == f"peer uid={shown} unit={unit or '-'} is not bound to this agent"


def test_bindings_of_an_agent_include_its_groups() -> None:
    group = Group("g", ("a*",), bind=BY_UNIT, require_contained=True)
    plain = Group("h", ("*",))
    agent = Agent("a", None, "t", (), bind=BY_UID, groups=(group, plain))
    assert bindings_of(agent) == (BY_UID, BY_UNIT)
    assert must_be_contained(agent)
    alone = Agent("b", None, "t", (), groups=(plain,))
    assert bindings_of(alone) == ()
    assert not must_be_contained(alone)
