"""Derived tokens over the agents' API: mint (`POST /v1/tokens`), list (`GET`) and revoke
(`DELETE /v1/tokens/{id}`), each in the order its checks run.

Mint: authenticate (a derived token counts a use) → the state store must be there (503) →
`may_derive` and the depth limit (403) → the body (no credential or token in it: it is stored;
strict JSON, every field checked, 400/422) →
the narrowing check against the agent's grants and every ancestor's scope (403
`scope_exceeds_parent`) → the expiry (never past the parent's, nor past a configured token's
`expires`) → one fsynced insert off the loop → `token_minted` → 201 with the token, shown once.
Writes go through `asyncio.to_thread` (each is an fsync); lookups are inline.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from typing import TYPE_CHECKING, Any

from turret.auth import new_token, token_sha256
from turret.capabilities.strictjson import parse_object
from turret.errors import (
    DeriveNotAllowed,
    NotFound,
    RequestError,
    ScopeExceedsParent,
    ServiceUnavailable,
)
from turret.pipeline.request import (
    Context,
    Exchange,
    Flow,
    Incoming,
    Reply,
    admit,
    begin,
    refuse_secret_body,
)
from turret.policy import Decision
from turret.principal import Principal
from turret.records import Event
from turret.tokens import (
    MAX_DERIVE_DEPTH,
    MintRequest,
    NewToken,
    ScopeRestriction,
    chain_layers,
    derive_settings,
    exceeding,
    parse_request,
    rfc3339,
)

if TYPE_CHECKING:
    from turret.state import DerivedToken, StateStore

TOKENS_PATH = "/v1/tokens"
# An expired token is kept this long before it is pruned, so that its use is answered
# `token_expired` (not `unauthorized`) and it still shows in listings meanwhile.
PRUNE_AFTER = 86400.0
MAX_BODY_BYTES = 64 << 10
_NO_STORE = "derived tokens need the state store: StateDirectory= or --state-dir"


def _store(ctx: Context) -> StateStore:
    if ctx.state is None:
        raise ServiceUnavailable(_NO_STORE)
    return ctx.state


async def mint(ctx: Context, incoming: Incoming, io: Exchange) -> Reply:
    """`POST /v1/tokens`: a new token that can do less, for less time."""
    flow = begin(ctx, incoming, TOKENS_PATH)
    principal = await admit(flow)
    try:
        store = _store(ctx)
        _may_derive(flow, principal)
        raw = await io.body(MAX_BODY_BYTES, flow.runtime.config.limits.body_timeout)
        # What is minted is stored and shown again (description, one_of values): never a secret.
        await refuse_secret_body(flow, raw)
        max_ttl, _ = derive_settings(principal.agent)
        request = parse_request(parse_object(raw), flow.runtime.config, max_ttl)
        scopes = [r.scope for r in principal.restrictions if isinstance(r, ScopeRestriction)]
        part = exceeding(request.scope, chain_layers(principal.agent, scopes))
        if part is not None:
            raise ScopeExceedsParent(f"{part} exceeds what this token may do itself")
    except RequestError as exc:
        flow.audit.refused(exc)
        raise
    token, new = _new_token(flow, principal, request)
    # Recorded before the token exists; if the record is lost, nothing is minted (503).
    flow.audit.decision(Decision.allow(f"token {new.id} minted"), 201)
    row = await asyncio.to_thread(store.tokens.insert, new)
    flow.audit.event(
        Event.TOKEN_MINTED,
        f"{principal.name}: token {row.id} minted, expires {rfc3339(row.expires)}",
        {
            "TURRET_TOKEN_ID": row.id,
            "TURRET_PARENT": row.parent_id or "-",
            "TURRET_SCOPE": request.scope.summary(),
            "TURRET_EXPIRES": rfc3339(row.expires),
            "TURRET_MAX_USES": row.max_uses,
        },
    )
    return Reply(201, {"ok": True, "token": token, **describe(row)})


def _may_derive(flow: Flow, principal: Principal) -> None:
    _, may_derive = derive_settings(principal.agent)
    lease = flow.lease
    if not may_derive:
        raise DeriveNotAllowed("this agent may not mint derived tokens (may_derive: false)")
    if lease is not None and not lease.may_derive:
        raise DeriveNotAllowed("this token was minted with may_derive: false")
    if lease is not None and lease.depth >= MAX_DERIVE_DEPTH:
        raise DeriveNotAllowed(f"derived tokens nest at most {MAX_DERIVE_DEPTH} deep")


def _new_token(flow: Flow, principal: Principal, request: MintRequest) -> tuple[str, NewToken]:
    """A new token and what is recorded of it: its expiry never past the parent's, nor past
    the configured token's `expires`."""
    now = flow.ctx.wall()
    ends = [now + request.ttl]
    if flow.lease is not None:
        ends.append(flow.lease.expires)
    if principal.agent.expires is not None:
        ends.append(principal.agent.expires)
    token = new_token()
    flow.ctx.tokens.remember(token)  # guarded by value from now on
    new = NewToken(
        id="tok_" + secrets.token_hex(8),
        digest=token_sha256(token),
        agent=principal.name,
        parent_id=flow.lease.id if flow.lease is not None else None,
        scope=request.scope.text(),
        created=now,
        expires=min(ends),
        max_uses=request.max_uses,
        may_derive=request.may_derive,
        description=request.description,
    )
    return token, new


def describe(row: DerivedToken) -> dict[str, Any]:
    """A token as the API shows it: never the token, nor its digest."""
    return {
        "id": row.id,
        "parent": row.parent_id,
        "description": row.description,
        "created": rfc3339(row.created),
        "expires_at": rfc3339(row.expires),
        "uses": row.uses,
        "max_uses": row.max_uses,
        "may_derive": row.may_derive,
        "revoked": row.revoked_at is not None,
        "scope": json.loads(row.scope),
    }


def _visible(flow: Flow, store: StateStore, principal: Principal) -> list[DerivedToken]:
    """The tokens the caller may see and revoke: a derived token's descendants, or every
    derived token of an agent that uses its own configured token."""
    if principal.token_id is not None:
        return store.tokens.descendants(principal.token_id)
    return store.tokens.by_agent(principal.name)


async def listing(ctx: Context, incoming: Incoming) -> Reply:
    """`GET /v1/tokens`: the caller's descendants, never a token value."""
    flow = begin(ctx, incoming, TOKENS_PATH)
    principal = await admit(flow)
    try:
        store = _store(ctx)
    except RequestError as exc:
        flow.audit.refused(exc)
        raise
    rows = _visible(flow, store, principal)
    flow.audit.decision(Decision.allow("tokens listed"), 200)
    return Reply(200, {"ok": True, "tokens": [describe(r) for r in rows]})


async def revoke(ctx: Context, incoming: Incoming, token_id: str) -> Reply:
    """`DELETE /v1/tokens/{id}`: revoke one of the caller's descendants and all of its own."""
    flow = begin(ctx, incoming, f"{TOKENS_PATH}/{token_id}")
    principal = await admit(flow)
    try:
        store = _store(ctx)
        if token_id not in {r.id for r in _visible(flow, store, principal)}:
            raise NotFound("no such token among this caller's derived tokens")
        by = f"agent:{principal.name}"
        by += f" token:{principal.token_id}" if principal.token_id else ""
        revoked = await revoke_tree(store, token_id, by, ctx.wall())
        revoked.sort(key=lambda rid: rid != token_id)  # the one asked for first
    except RequestError as exc:
        flow.audit.refused(exc)
        raise
    flow.audit.decision(Decision.allow(f"token {token_id} revoked"), 200)
    for rid in revoked:
        cause = "revoked" if rid == token_id else f"parent {token_id} revoked"
        flow.audit.event(
            Event.TOKEN_REVOKED,
            f"{principal.name}: token {rid} {cause} by {by}",
            {"TURRET_TOKEN_ID": rid, "TURRET_REVOKED_BY": by if rid == token_id else "parent"},
        )
    return Reply(200, {"ok": True, "revoked": revoked})


async def revoke_tree(store: StateStore, token_id: str, by: str, at: float) -> list[str]:
    """Revoke a token and its descendants (one fsynced write, off the loop); the ids newly
    revoked. The operator's `turret tokens revoke ID` calls this too."""
    return await asyncio.to_thread(store.tokens.revoke_subtree, token_id, by, at)


def operator_listing(store: StateStore, agents: list[str], at: float) -> list[dict[str, Any]]:
    """Every derived token of `agents` (`turret tokens [--agent A]`), with whether it is in
    force at `at`; never a token value."""
    rows = [r for a in agents for r in store.tokens.by_agent(a)]
    return [
        {**describe(r), "agent": r.agent,
         "in_force": r.revoked_at is None and r.expires > at and r.uses_left() != 0}
        for r in rows
    ]



async def prune_expired(ctx: Context) -> list[str]:
    """Forget the tokens that expired more than `PRUNE_AFTER` ago (one write, off the loop),
    recording `token_expired` for each; the ids pruned."""
    if ctx.state is None:
        return []
    pruned = await asyncio.to_thread(ctx.state.tokens.prune_expired, ctx.wall() - PRUNE_AFTER)
    for token_id in pruned:
        ctx.auditor.record(
            Event.TOKEN_EXPIRED, f"token {token_id} expired and was pruned",
            {"TURRET_TOKEN_ID": token_id},
        )
    return pruned
