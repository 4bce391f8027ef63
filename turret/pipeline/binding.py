"""Peer binding and containment, the pipeline's part: what the audit records of the caller, a
bound agent's token refused from any other caller, and `require_contained`.

The peer is the kernel's word on the unix connection (`Incoming.peer`, read once at accept);
over TCP there is none, so a bound agent's token is refused there. The refusal is the same
whatever did not match (uid, unit, transport): the audit record says which peer it was.
"""

from __future__ import annotations

from turret.config.bind import OVERFLOW_UID
from turret.containment import UNKNOWN, ContainmentSource
from turret.errors import NotContained, PeerMismatch
from turret.model import Agent
from turret.peers import binding_refusal, bindings_of, must_be_contained
from turret.principal import Peer
from turret.records import Fields

MISMATCH = "this token is not valid from this caller"


def peer_fields(peer: Peer | None) -> Fields:
    """The audit fields of a request's peer (none over TCP)."""
    if peer is None:
        return {}
    return {
        "TURRET_PEER_PID": peer.pid,
        "TURRET_PEER_UID": peer.uid,
        "TURRET_PEER_GID": peer.gid,
        "TURRET_PEER_UNIT": peer.unit,
        "TURRET_PEER_USER_UNIT": peer.user_unit,
    }


def binding_error(agent: Agent, peer: Peer | None) -> PeerMismatch | None:
    """`PeerMismatch` if `agent` is bound and `peer` is not one of its callers."""
    bindings = bindings_of(agent)
    if not bindings:
        return None
    if peer is None:
        return PeerMismatch(MISMATCH, reason="a bound agent's token over TCP (no peer)")
    refusal = binding_refusal(bindings, peer.uid, peer.unit)
    if refusal is None:
        return None
    by_unit = any(b.units for b in bindings)
    return PeerMismatch(MISMATCH, reason=refusal + _blind_spot(peer, by_unit=by_unit))


def _blind_spot(peer: Peer, *, by_unit: bool) -> str:
    """Hints for the operator when the peer looks like what Turret's own sandbox hides."""
    hints = []
    if peer.uid == OVERFLOW_UID:
        hints.append("uid 65534: does Turret run with PrivateUsers=yes?")
    if by_unit and peer.unit is None:
        hints.append("no unit could be read: in none, or hidden by ProtectProc=")
    return f" ({'; '.join(hints)})" if hints else ""


async def check_containment(
    units: ContainmentSource | None, agent: Agent, peer: Peer | None, fields: Fields
) -> None:
    """Record the containment of the caller's unit in `fields` (for a bound agent or one that
    requires containment); `NotContained` if the agent requires it and the unit is not."""
    required = must_be_contained(agent)
    if not (required or bindings_of(agent)):
        return
    unit = peer.unit if peer is not None else None
    if peer is None or units is None:
        found = UNKNOWN
    else:
        found = await units.containment(unit, peer.uid, peer.sandbox)
    fields["TURRET_CONTAINMENT"] = found.level.value
    fields["TURRET_CONTAINMENT_GAPS"] = ",".join(found.gaps) or None
    refusal = found.refusal(unit) if required else None
    if refusal is not None:
        raise NotContained(refusal)
