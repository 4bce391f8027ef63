"""The external policy step: after Turret's own policy allows, OPA must allow too.

The step is pure apart from one await on the `PolicyOracle` the web layer provides (in the
`Context`, as `Exchange` is per request). Its input names the agent, the derived token, the
action and the time; a capability's checked parameters go in, but only after the exfiltration
guard has passed them, and a proxied request's path is searched for credentials and agent
tokens first, so no credential value is ever sent to OPA. Without a configured `policy.opa`
the step does nothing; with one but no oracle, it denies (fail closed).
"""

from __future__ import annotations

from typing import NamedTuple, Protocol

from multidict import CIMultiDict

from turret import opa
from turret.errors import CredentialInRequest
from turret.exfil import find_secret_async
from turret.model import Action, CapabilityAction
from turret.opa import OpaSettings, Verdict
from turret.pipeline.request import Flow
from turret.policy import Decision, Result
from turret.principal import Principal


class PolicyOracle(Protocol):
    """Asks the external policy (the web layer's `turret.opaclient.OpaClient`)."""

    async def ask(self, settings: OpaSettings, query: bytes) -> Verdict:
        """The verdict on `query`; never raises (a failure is a denying verdict)."""


class Denied(NamedTuple):
    """The external policy's denial: the decision to record (with OPA's own reason, if any) and
    what the agent is told (the reason code only, never OPA's text)."""

    decision: Decision
    message: str


async def consult(
    flow: Flow, principal: Principal, action: Action, decision: Decision
) -> Denied | None:
    """The external policy's denial of an allowed `decision`, or None when it allows (or
    there is no external policy, or Turret's own policy already denied). A call held for a
    person's approval is asked about too: OPA's denial stops it before anyone is asked."""
    settings = flow.runtime.config.opa
    if settings is None or not (decision.allowed or decision.result is Result.APPROVAL):
        return None
    oracle = flow.ctx.oracle
    if oracle is None:
        answer = opa.refusal("opa_unavailable")
    else:
        answer = await oracle.ask(settings, await _query(flow, principal, action))
    flow.audit.fields["TURRET_OPA"] = answer.code
    if answer.allowed:
        return None
    detail = f": {answer.detail}" if answer.detail else ""
    return Denied(
        Decision.deny(f"external policy: {answer.code}{detail}", "policy.opa"),
        f"the external policy does not allow this request ({answer.code})",
    )


async def _query(flow: Flow, principal: Principal, action: Action) -> bytes:
    if isinstance(action, CapabilityAction):
        cap = action.capability
        kind, capability, params, service = "capability", cap.name, action.params, cap.service
        method = path = None
    else:
        await _refuse_secret_path(flow, action.path.encoded)
        kind, capability, params, service = "proxy", None, None, action.service
        method, path = action.method, action.path.encoded
    return opa.query(
        agent=principal.name, token_id=principal.token_id, kind=kind, capability=capability,
        params=params, service=service, method=method, path=path, time=flow.ctx.wall(),
    )  # fmt: skip


async def _refuse_secret_path(flow: Flow, path: str) -> None:
    """A proxied path carrying a credential or an agent token is refused before it could reach
    OPA (its decision log would keep it); the body and query are not sent to OPA at all."""
    where = await find_secret_async(
        flow.guards(), path=path, query="", headers=CIMultiDict(), body=b""
    )
    if where is not None:
        raise CredentialInRequest(
            "request carries a credential or agent token and was not forwarded",
            reason=f"exfiltration guard: credential material in the {where}",
        )

