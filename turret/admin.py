"""The operator's commands: who may use the admin socket, revoke and seal over the state store,
and the documents `turret status` and `turret agents` show.

No aiohttp here: the admin app (`turret.web.admin`) adapts HTTP to these functions. The store's
writes fsync, so the app calls the commands in a worker thread; the documents only query.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from turret.counters import RequestCounters
from turret.credwatch import attention
from turret.errors import BadRequest, NotFound, ServiceUnavailable
from turret.model import AGENT_NAME, AdminSettings, Agent, Config
from turret.pipeline.tokens import operator_listing
from turret.state import Revocation, Seal, StateStore, by_uid
from turret.tokens import rfc3339

NO_STORE = (
    "no state store: run Turret with a state directory (StateDirectory=turret under systemd, "
    "or `turret serve --state-dir DIR`) to seal, revoke or keep derived tokens"
)
MAX_REASON_CHARS = 500
TOKEN_ID = re.compile(r"tok_[0-9a-f]{16}")


@dataclass(frozen=True)
class Peer:
    """The admin client's uid and gid (`SO_PEERCRED`), and the members of `admin.allow_group`
    with its gid (None when no group is configured or it does not exist)."""

    uid: int
    gid: int
    group: tuple[int, frozenset[str]] | None = None
    user: str | None = None


def peer_allowed(peer: Peer | None, own_uid: int, settings: AdminSettings) -> bool:
    """Whether `peer` may use the admin socket: root, Turret's own uid, a uid in
    `admin.allow_uids`, or a member (primary or supplementary) of `admin.allow_group`."""
    if peer is None:  # no kernel-given credentials: not a unix socket
        return False
    if peer.uid in (0, own_uid) or peer.uid in settings.allow_uids:
        return True
    if settings.allow_group is None or peer.group is None:
        return False
    gid, members = peer.group
    return peer.gid == gid or (peer.user is not None and peer.user in members)


def store_of(state: StateStore | None) -> StateStore:
    """The state store, or 503 saying how to configure one."""
    if state is None:
        raise ServiceUnavailable(NO_STORE)
    return state


def body_object(raw: bytes) -> dict[str, Any] | None:
    """An admin request's body as a JSON object, None if it has none; a `BadRequest` if it is
    something else."""
    if not raw:
        return None
    try:
        body = json.loads(raw)
    except ValueError:
        raise BadRequest("the body must be a JSON object") from None
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    return body


def reason_from_body(raw: bytes, default: str) -> str:
    """The `reason` of an admin request's body (none: `default`); a `BadRequest` if the body is
    not a JSON object."""
    body = body_object(raw)
    return default if body is None else reason_of(body.get("reason"), default)


def reason_of(value: object, default: str) -> str:
    """An operator's free-text reason, printable and capped (it goes into the audit trail)."""
    text = value if isinstance(value, str) and value.strip() else default
    text = "".join(c if c.isprintable() else " " for c in text)
    return text[:MAX_REASON_CHARS]


def revoke(
    state: StateStore, config: Config, agent: str, *, reason: str, uid: int, at: float
) -> dict[str, object]:
    """Revoke a configured agent and every token derived from it."""
    if agent not in config.agents:
        raise NotFound(f"no agent {agent!r} in the configuration")
    by = by_uid(uid)
    revocation = state.controls.revoke_agent(agent, reason, by, at)
    tokens = state.tokens.revoke_agent_tokens(agent, by, at)
    return {
        "agent": agent,
        "revoked": switch_doc(revocation),
        "derived_tokens_revoked": len(tokens),
        "revoked_token_ids": tokens,
    }


def unrevoke(state: StateStore, agent: str) -> dict[str, object]:
    """Lift an agent's revocation (its derived tokens stay revoked: they are not restored)."""
    if not AGENT_NAME.fullmatch(agent):
        raise NotFound(f"no agent {agent!r}")
    if not state.controls.unrevoke_agent(agent):
        raise NotFound(f"agent {agent!r} is not revoked")
    return {"agent": agent, "revoked": None}


def seal(state: StateStore, reason: str, uid: int, at: float) -> dict[str, object]:
    """Seal Turret: every agent request is refused (503 `sealed`) until unsealed."""
    return {"sealed": switch_doc(state.controls.seal(reason, by_uid(uid), at))}


def killswitch(state: StateStore, reason: str, uid: int, at: float) -> dict[str, object]:
    """Seal Turret and revoke every derived token, in that order (the seal stops requests first)."""
    by = by_uid(uid)
    sealed = state.controls.seal(reason, by, at)
    tokens = state.tokens.revoke_all(by, at)
    return {
        "sealed": switch_doc(sealed),
        "derived_tokens_revoked": len(tokens),
        "revoked_token_ids": tokens,
    }


def unseal(state: StateStore) -> dict[str, object]:
    """Lift the seal; what it was, or 404 when Turret was not sealed."""
    previous = state.controls.unseal()
    if previous is None:
        raise NotFound("turret is not sealed")
    return {"sealed": None, "was": switch_doc(previous)}


def switch_doc(switch: Seal | Revocation | None) -> dict[str, object] | None:
    """A seal or a revocation as JSON: why, by whom, since when."""
    if switch is None:
        return None
    return {"reason": switch.reason, "by": switch.by, "since": switch.at}


@dataclass(frozen=True)
class Facts:
    """What the server knows about itself, for `turret status`."""

    version: str
    started: float
    config_digest: str
    last_reload: str
    audit_sink: str
    in_flight: int


def status_doc(
    facts: Facts, config: Config, state: StateStore | None, counters: RequestCounters, at: float
) -> dict[str, object]:
    """The document of `turret status` (queries only)."""
    revoked = state.controls.revoked_agents() if state is not None else {}
    return {
        "version": facts.version,
        "uptime_seconds": round(at - facts.started, 3),
        "config_digest": facts.config_digest,
        "state_store": state is not None,
        "sealed": switch_doc(state.controls.sealed()) if state is not None else None,
        "agents": {"count": len(config.agents), "revoked": sorted(revoked)},
        "services": sorted(config.services),
        "credentials_needing_attention": attention(config, state, at),
        "derived_tokens_in_force": state.tokens.in_force(at) if state is not None else 0,
        "last_reload": facts.last_reload,
        "audit_sink": facts.audit_sink,
        "requests": {
            "decisions": counters.totals(),
            "in_flight": facts.in_flight,
            "audit_failures": counters.audit_failures,
        },
    }


def agents_doc(
    config: Config, state: StateStore | None, counters: RequestCounters, at: float
) -> list[dict[str, object]]:
    """The document of `turret agents`: one entry per configured agent, by name, with its
    configured token's `expires` (and whether that is past at `at`)."""
    revoked: Mapping[str, Revocation] = state.controls.revoked_agents() if state else {}
    return [
        {
            "agent": name,
            "grants": grants_summary(agent),
            "revoked": switch_doc(revoked.get(name)),
            "last_seen": counters.last_seen.get(name),
            "requests": counters.by_agent(name),
            "expires": None if agent.expires is None else rfc3339(agent.expires),
            "expired": agent.expires is not None and agent.expires <= at,
        }
        for name, agent in sorted(config.agents.items())
    ]


def tokens_doc(
    state: StateStore, config: Config, agent: str | None, at: float
) -> list[dict[str, Any]]:
    """The document of `turret tokens [--agent A]`: every derived token of the configured agents
    (or of A) still in the store, in force or recently expired, by agent, oldest first; never a
    value."""
    if agent is not None and agent not in config.agents:
        raise NotFound(f"no agent {agent!r} in the configuration")
    agents = [agent] if agent is not None else sorted(config.agents)
    rows = operator_listing(state, agents, at)
    return [{**r, "scope_summary": scope_summary(r["scope"])} for r in rows]


def scope_summary(scope: Mapping[str, Any]) -> str:
    """A token's scope in brief: `service METHODS paths` per proxy grant, `cap NAME` per
    capability; `nothing` for an empty scope."""
    parts = [
        f"{g['service']} {'/'.join(g.get('methods', []))} {' '.join(g.get('paths', []))}".strip()
        for g in scope.get("proxy", [])
    ]
    parts += [f"cap {g['name']}" for g in scope.get("capabilities", [])]
    return "; ".join(parts) or "nothing"


def token_id_of(value: str) -> str:
    """A derived token's id as the operator typed it, or 400."""
    if not TOKEN_ID.fullmatch(value):
        raise BadRequest(f"a token id must match {TOKEN_ID.pattern}")
    return value


def known_token(state: StateStore, token_id: str) -> str:
    """The id of a token in the store, or 404; its agent."""
    row = state.tokens.get(token_id)
    if row is None:
        raise NotFound(f"no derived token {token_id!r}")
    return row.agent


def grants_summary(agent: Agent) -> dict[str, object]:
    """What an agent may do, in brief: proxied services with methods, capability globs, groups."""
    proxy: dict[str, set[str]] = {}
    for grant in (*agent.proxy, *(g for group in agent.groups for g in group.proxy)):
        proxy.setdefault(grant.service, set()).update(grant.methods)
    capabilities = [g.name for g in agent.capabilities]
    capabilities += [g.name for group in agent.groups for g in group.capabilities]
    return {
        "proxy": {service: sorted(methods) for service, methods in sorted(proxy.items())},
        "capabilities": sorted(set(capabilities)),
        "groups": [g.name for g in agent.groups],
        "report_only": agent.report,
    }
