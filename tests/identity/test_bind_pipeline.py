"""Binding and containment in the sans-I/O pipeline, with peers that only a real systemd host
would produce (a resolved unit, a sealed network namespace): a real `Context`, the caller's
`Peer` as the web layer would hand it over, and a containment source answering from a fixed
set of unit properties (systemd's part; the assessment is Turret's own)."""

from __future__ import annotations

from pathlib import Path

import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from tests.pipeline.conftest import Clock, Recording
from turret.auth import new_token, token_sha256
from turret.config import load_config
from turret.containment import Containment, ProcessFacts, assess
from turret.errors import NotContained, PeerMismatch, RequestError
from turret.exfil import TokenGuard
from turret.pipeline import proxy
from turret.pipeline.request import Context, Incoming
from turret.principal import Peer
from turret.providers.build import build_runtime
from turret.ratelimit import AgentLimiter, FloodGate
from turret.records import Event
from turret.runtime import RuntimeHolder

TURRET_UID = 61000
SEALED = ProcessFacts(frozenset({"lo"}), no_new_privs=True, capabilities=0)
ON_NET = ProcessFacts(frozenset({"lo", "eth0"}), no_new_privs=True, capabilities=0)


class FixedUnits:
    """Systemd's answer for every unit: `props` (None: it did not answer)."""

    def __init__(self, props: dict[str, str] | None) -> None:
        self.props = props
        self.asked: list[str | None] = []

    async def containment(
        self, unit: str | None, uid: int | None, facts: ProcessFacts | None
    ) -> Containment:
        self.asked.append(unit)
        return assess(self.props, uid, TURRET_UID, facts)


def context(creds_dir: Path, token: str, agent: str, units: FixedUnits) -> Context:
    text = f"""
services:
  gitea: {{url: "http://127.0.0.1:9", auth: {{bearer: gitea-token}}}}
agents:
  opencode:
    token_sha256: {token_sha256(token)}
    proxy: []
{agent}"""
    runtime = build_runtime(load_config(text), str(creds_dir))
    clock = Clock()
    holder = RuntimeHolder(runtime)
    return Context(
        holder, Recording(), AgentLimiter(clock), FloodGate(clock), TokenGuard(), units=units
    )


def incoming(token: str, peer: Peer | None) -> Incoming:
    headers = CIMultiDictProxy(CIMultiDict([("Authorization", f"Bearer {token}")]))
    return Incoming("GET", "/v1/whoami", headers, "", None, "req-1", peer)


def peer(unit: str | None, facts: ProcessFacts | None = SEALED, uid: int = 1000) -> Peer:
    return Peer(4242, uid, uid, unit, None, facts)


async def whoami(ctx: Context, token: str, who: Peer | None) -> int | RequestError:
    try:
        return (await proxy.whoami(ctx, incoming(token, who))).status
    except RequestError as exc:
        return exc


def recorded(ctx: Context, token: str) -> dict[str, object]:
    """The last decision record; no record so far holds the agent's token."""
    assert isinstance(ctx.auditor, Recording)
    for _, message, fields in ctx.auditor.records:
        assert token not in message + repr(fields)
    return dict(ctx.auditor.last(Event.DECISION))


@pytest.mark.parametrize(
    ("unit", "allowed"),
    [
        ("opencode.service", True),
        ("opencode-evil.service", False),
        ("user@1000.service", False),  # opencode.service in a user manager is not the unit
        (None, False),
    ],
)
async def test_bind_unit_allows_only_a_peer_in_the_unit(
    creds_dir: Path, unit: str | None, *, allowed: bool
) -> None:
    token = new_token()
    ctx = context(creds_dir, token, "    bind: {unit: opencode.service}\n", FixedUnits(None))
    got = await whoami(ctx, token, peer(unit))
    if allowed:
        assert got == 200
    else:
        assert isinstance(got, PeerMismatch)
    fields = recorded(ctx, token)
    assert fields["TURRET_PEER_UNIT"] == unit and fields["TURRET_PEER_UID"] == 1000
    assert fields.get("TURRET_CONTAINMENT") == ("contained" if allowed else None)


async def test_bind_containment_recorded_and_required(creds_dir: Path) -> None:
    token = new_token()
    units = FixedUnits({"LoadState": "loaded", "PrivateNetwork": "no", "NoNewPrivileges": "yes"})
    agent = "    bind: {unit: opencode.service}\n    require_contained: true\n"
    ctx = context(creds_dir, token, agent, units)
    assert await whoami(ctx, token, peer("opencode.service", SEALED)) == 200
    assert recorded(ctx, token)["TURRET_CONTAINMENT"] == "contained"
    refused = await whoami(ctx, token, peer("opencode.service", ON_NET))
    assert isinstance(refused, NotContained) and refused.status == 403
    assert refused.message == "the calling unit opencode.service is not contained: PrivateNetwork"
    fields = recorded(ctx, token)
    assert fields["TURRET_CONTAINMENT"] == "uncontained"
    assert fields["TURRET_CONTAINMENT_GAPS"] == "PrivateNetwork"
    assert fields["TURRET_STATUS"] == 403
    assert units.asked == ["opencode.service", "opencode.service"]
    # the unit's address filter, where systemd says so, closes the network
    units.props = {**(units.props or {}), "IPAddressDeny": "0.0.0.0/0 ::/0"}
    assert await whoami(ctx, token, peer("opencode.service", ON_NET)) == 200
    # nothing readable of the process and no word from systemd: unknown, refused
    units.props = None
    refused = await whoami(ctx, token, peer("opencode.service", None))
    assert isinstance(refused, NotContained)
    assert recorded(ctx, token)["TURRET_CONTAINMENT"] == "unknown"


async def test_bind_containment_root_and_turrets_own_user_are_never_contained(
    creds_dir: Path,
) -> None:
    token = new_token()
    ctx = context(creds_dir, token, "    require_contained: true\n", FixedUnits(None))
    for uid in (0, TURRET_UID):
        refused = await whoami(ctx, token, peer("opencode.service", SEALED, uid=uid))
        assert isinstance(refused, NotContained)
        assert refused.message.endswith(": User")
