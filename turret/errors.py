"""The one exception tree of Turret.

Every error an agent can see is a `RequestError` carrying an HTTP status and a stable machine
code; its message is written for the agent and never contains a secret, an upstream URL or an
upstream header. Errors that stop Turret from starting are `StartupError`s.
"""

from __future__ import annotations

from dataclasses import dataclass


def error_body(code: str, message: str, request_id: str) -> dict[str, object]:
    """The one error shape every error response uses."""
    return {"ok": False, "error": {"code": code, "message": message, "request_id": request_id}}


class TurretError(Exception):
    """Base of every error Turret raises on purpose."""


# --- start-up: configuration and credentials -------------------------------------------------


@dataclass(frozen=True)
class ConfigIssue:
    """One problem in a configuration file, located by dotted key path and line."""

    path: str
    line: int | None
    message: str

    def __str__(self) -> str:
        where = f"line {self.line}: " if self.line is not None else ""
        return f"{where}{self.path}: {self.message}" if self.path else f"{where}{self.message}"


class StartupError(TurretError):
    """Turret refuses to start (fail closed)."""


class ConfigError(StartupError):
    """The configuration is invalid; `issues` lists every problem found."""

    def __init__(self, issues: list[ConfigIssue]) -> None:
        self.issues = issues
        super().__init__("\n".join(str(i) for i in issues))


class YamlError(ConfigError):
    """The text is not acceptable YAML (a tag, an alias, a duplicate key); `issues` says where."""


class CredentialError(StartupError):
    """A referenced credential is missing or unusable; the message names it, never its value."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


class AddressRefused(TurretError, OSError):
    """Every address a service's host resolved to is outside its address policy.

    An `OSError`, so that aiohttp's connector treats it as a failed connection attempt."""

    def __init__(self, reasons: list[str]) -> None:
        super().__init__("; ".join(reasons) or "no address")
        self.reasons = reasons


class StateError(StartupError):
    """The state store cannot be used; the message names the path and what to do."""


class AuditUnavailable(TurretError):
    """An audit record could not be written; the action it describes must not happen."""


# --- request errors: what an agent sees -------------------------------------------------------


class RequestError(TurretError):
    """An error answered to the agent as the JSON error shape."""

    status: int = 500
    code: str = "internal"

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        # `reason` goes to the audit record; it may say more than the agent is told.
        self.reason = reason or message


class BadRequest(RequestError):
    status, code = 400, "bad_request"


class Unauthorized(RequestError):
    status, code = 401, "unauthorized"


class Revoked(Unauthorized):
    """The token is valid but was revoked: its agent by an operator (`turret revoke`), or a
    derived token (or one of its ancestors) by its agent, an operator or the killswitch."""

    code = "revoked"


class Forbidden(RequestError):
    status, code = 403, "forbidden"


class TokenExpired(Unauthorized):
    """A derived token (or one of its ancestors) is past its expiry."""

    code = "token_expired"


class TokenExhausted(Unauthorized):
    """A derived token has made all the requests its `max_uses` allowed."""

    code = "token_exhausted"



class ScopeExceedsParent(Forbidden):
    """A derived token was asked for more than the caller may do itself; the message names the
    first part of the request that exceeds."""

    code = "scope_exceeds_parent"


class DeriveNotAllowed(Forbidden):
    """The caller may not mint derived tokens (`may_derive`, or the depth limit)."""

    code = "derive_not_allowed"


class NotFound(RequestError):
    status, code = 404, "not_found"


class CredentialInRequest(Forbidden):
    """The request carries a credential or agent token (exfiltration guard)."""

    code = "credential_in_request"


class MethodNotAllowed(RequestError):
    status, code = 405, "method_not_allowed"


class RequestTimeout(RequestError):
    status, code = 408, "request_timeout"


class PayloadTooLarge(RequestError):
    status, code = 413, "request_too_large"


class UnprocessableEntity(RequestError):
    """Well-formed JSON whose values a capability does not accept; the message names the key."""

    status, code = 422, "invalid_params"


class InvalidTokenRequest(UnprocessableEntity):
    """A `POST /v1/tokens` body whose fields are not acceptable; the message names the field."""

    code = "invalid_request"


class TooManyRequests(RequestError):
    """Over the agent's rate or concurrency limit; answered with `Retry-After`."""

    status, code = 429, "rate_limited"

    def __init__(self, message: str, *, retry_after: int, reason: str | None = None) -> None:
        super().__init__(message, reason=reason)
        self.retry_after = retry_after


class BadGateway(RequestError):
    status, code = 502, "upstream_error"


class ResponseWithheld(BadGateway):
    """The upstream's answer holds credential material in a form that cannot be redacted in
    place (seen only once decoded): nothing of it reaches the agent."""

    code = "response_withheld"


class UpstreamStatus(RequestError):
    """A capability's upstream answered with an error status; the message gives that status."""

    status, code = 502, "upstream_status"


class ServiceUnavailable(RequestError):
    status, code = 503, "unavailable"


class Sealed(ServiceUnavailable):
    """Turret is sealed (`turret seal` or `turret killswitch`): no agent request is served."""

    code = "sealed"


class CredentialUnavailable(ServiceUnavailable):
    """The service's credential may not be used or obtained: past its enforced `max_age`, or a
    provider could not mint it (after its retries). Nothing was forwarded, and no weaker
    credential is used instead. For a failed mint, `provider`, `service` and `cause` (a fixed
    phrase) say which and why, for the alert; an overdue credential leaves `provider` empty."""

    code = "credential_unavailable"

    def __init__(
        self,
        message: str,
        *,
        reason: str | None = None,
        provider: str = "",
        service: str = "",
        cause: str = "",
    ) -> None:
        super().__init__(message, reason=reason)
        self.provider, self.service, self.cause = provider, service, cause


class GatewayTimeout(RequestError):
    status, code = 504, "upstream_timeout"


class PolicyDenied(Forbidden):
    """The external policy (OPA) did not allow what Turret's own policy allowed."""

    code = "policy_denied"


class Conflict(RequestError):
    """An operator's command on something no longer in the state it needs (an approval already
    decided, or expired)."""

    status, code = 409, "conflict"


class PeerMismatch(Unauthorized):
    """A bound agent's token (or one derived from it) from a caller its `bind:` does not name,
    or over TCP. The same answer whatever did not match."""

    code = "peer_mismatch"


class NotContained(Forbidden):
    """`require_contained`: the caller's unit can reach around Turret; the message names the
    first systemd property that lets it."""

    code = "not_contained"
