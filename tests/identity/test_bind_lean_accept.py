"""The peer's confinement is read at accept only while the running config checks or records
some agent's containment: otherwise only its credentials and unit (for the audit's peer fields
and binding)."""

from __future__ import annotations

import socket
from dataclasses import dataclass, replace
from typing import Any, cast

import pytest

from turret.model import Agent, Config, Group, PeerBinding
from turret.peers import asks_containment
from turret.runtime import RuntimeHolder
from turret.web import app as webapp

PLAIN = Agent("a", None, "t", ())


def test_asks_containment_only_for_a_bound_or_contained_agent() -> None:
    assert not asks_containment([PLAIN])
    assert not asks_containment([])
    assert asks_containment([PLAIN, replace(PLAIN, require_contained=True)])
    assert asks_containment([replace(PLAIN, bind=PeerBinding(uids=frozenset({1})))])
    group = Group("g", ("a",), require_contained=True)
    assert asks_containment([replace(PLAIN, groups=(group,))])


@dataclass
class _Runtime:
    config: Any


@dataclass
class _Holder:
    current: _Runtime


def test_peer_identity_reads_the_sandbox_only_when_the_config_asks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    asked: list[bool] = []
    monkeypatch.setattr(webapp, "identify", lambda sock, *, sandbox: asked.append(sandbox))
    plain = cast(Config, type("C", (), {"agents": {"a": PLAIN}})())
    holder = _Holder(_Runtime(plain))
    read = webapp.peer_identity(cast(RuntimeHolder, holder))
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with a, b:
        read(a)
        contained = {"a": replace(PLAIN, require_contained=True)}
        holder.current = _Runtime(type("C", (), {"agents": contained})())  # a reload
        read(a)
    assert asked == [False, True]
