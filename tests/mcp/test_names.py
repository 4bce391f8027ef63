"""Capability names to tool names: reversible, within every client's rules, clashes refused."""

from __future__ import annotations

import pytest

from turret.mcp.names import TOOL_NAME, NameClash, capability_name, tool_name, tool_names


@pytest.mark.parametrize(
    "capability",
    ["git.close_issue", "home_assistant.turn_on", "a.b.c", "work-matrix.send_message", "x1.y-2"],
)
def test_names_round_trip(capability: str) -> None:
    name = tool_name(capability)
    assert TOOL_NAME.fullmatch(name)
    assert capability_name(name) == capability


@pytest.mark.parametrize(
    "capability",
    [
        "a__b.c",  # would come back as a.b.c
        "a_.b",  # a___b: which underscore was the dot?
        "a._b",
        "a..b",
        ".a",
        "a.",
        "s." + "x" * 62,  # 65 characters once mapped
        "Caps.ok.but.ümlaut",
    ],
)
def test_names_refuse_ambiguous_or_invalid(capability: str) -> None:
    with pytest.raises(NameClash):
        tool_name(capability)


def test_names_listing_refuses_clashes_and_shadowing() -> None:
    assert tool_names(["git.a", "git.b"]) == {"git__a": "git.a", "git__b": "git.b"}
    with pytest.raises(NameClash, match="both"):
        tool_names(["git.a", "git.a"])
    with pytest.raises(NameClash, match="shadow"):
        tool_names(["turret_http"])
    with pytest.raises(NameClash, match=r"a__b\.c"):
        tool_names(["ok.one", "a__b.c"])


@pytest.mark.parametrize("tool", ["", "a/b", "a.b", "a b", "x" * 65, "../v1/whoami"])
def test_names_invalid_tool_names_map_to_nothing(tool: str) -> None:
    assert capability_name(tool) is None
