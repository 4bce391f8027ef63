"""Every frozen value Turret is configured with, and every name pattern, defined once.

No behaviour beyond small derived lookups, no I/O. The config reader (`turret.config`) builds
these values; the policy, the pipeline and the capability engine read them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Union

from multidict import CIMultiDict

from turret.credmodel import CredentialPolicy, HealthCheck
from turret.heartbeat import CheckinSettings, HeartbeatSettings
from turret.netpolicy import AddressPolicy
from turret.opa import OpaSettings
from turret.paths import CanonicalPath, GlobIndex, PathGlob
from turret.ratelimit import AgentLimits, ServerLimits

if TYPE_CHECKING:
    from turret.authkinds import Auth
    from turret.config.alerts import AlertSettings
    from turret.config.providers import ProviderSpec

# --- names --------------------------------------------------------------------------------------

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")
AGENT_NAME = re.compile(r"[a-z0-9][a-z0-9_.@/-]{0,127}")
HEADER_NAME = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]{1,128}")
QUERY_NAME = re.compile(r"[A-Za-z0-9_.~-]{1,128}")
SHA256_HEX = re.compile(r"[0-9a-f]{64}")
LISTEN_TCP = re.compile(r"(?P<host>\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):(?P<port>[0-9]{1,5})")
# Credential names are file names in $CREDENTIALS_DIRECTORY (systemd allows no "/").
CREDENTIAL_NAME = re.compile(r"[A-Za-z0-9_.@-]{1,128}")


CAPABILITY_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}\.[a-z0-9_]{1,64}")
# A parameter as a capability defines it; a call naming anything else is refused.
PARAM_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")
NAME_GLOB = re.compile(r"[a-z0-9_.*-]{1,128}")
AGENT_GLOB = re.compile(r"[a-z0-9_.@/*-]{1,128}")
# A form or multipart field name in a request template.
FIELD_NAME = re.compile(r"[A-Za-z0-9_.\[\]-]{1,128}")


# --- services and agents ---------------------------------------------------------------------

@dataclass(frozen=True)
class Service:
    """An upstream: its origin and base path are the only place requests for it may go."""

    name: str
    url: str  # scheme://host[:port][/base], no trailing slash
    auth: Auth
    timeout: float = 10.0
    max_request_bytes: int = 1 << 20
    max_response_bytes: int = 4 << 20
    kind: str | None = None  # a catalog kind: the service gets that kind's capabilities
    node: str | None = None  # Proxmox: the node capabilities use by default
    # Checked for DNS names on every connection; IP literals are used as written.
    address_policy: AddressPolicy = field(default_factory=AddressPolicy)
    trackers: tuple[str, ...] = ()  # qBittorrent: tracker URLs a magnet link may carry (`tr=`)
    check: HealthCheck | None = None  # `turret check`: proves the credential works (`credmodel`)


@dataclass(frozen=True)
class ProxyGrant:
    service: str
    methods: frozenset[str]
    paths: tuple[PathGlob, ...]


@dataclass(frozen=True)
class Agent:
    name: str
    token_sha256: str | None  # hex; exactly one of this and token_credential
    token_credential: str | None
    proxy: tuple[ProxyGrant, ...]
    capabilities: tuple[CapabilityGrant, ...] = ()
    deny: tuple[DenyRule, ...] = ()
    report: bool = False  # log what enforcement would deny, but allow it (for rollout)
    groups: tuple[Group, ...] = ()  # the groups whose agent globs match this agent
    limits: AgentLimits = field(default_factory=AgentLimits)
    # Derived tokens: None leaves it to the groups, then to the default (turret.tokens).
    max_ttl: float | None = None  # seconds
    may_derive: bool | None = None
    expires: float | None = None  # the configured token's own end (seconds since the epoch)
    # Peer binding (turret.peers): the callers its tokens work for, and whether the caller's
    # unit must be contained (turret.containment).
    bind: PeerBinding | None = None
    require_contained: bool = False

    @cached_property
    def proxy_index(self) -> dict[tuple[str, str], GlobIndex[str]]:
        """The agent's and its groups' proxy grants by (service, method), each path glob with
        the dotted path of its grant; built on first use, so a decision stays fast however many
        grants there are."""
        rules: dict[tuple[str, str], list[tuple[PathGlob, str]]] = {}
        named = [(f"agents.{self.name}.proxy", self.proxy)]
        named += [(f"groups.{g.name}.proxy", g.proxy) for g in self.groups]
        for where, grants in named:
            for i, grant in enumerate(grants):
                for method in grant.methods:
                    entries = rules.setdefault((grant.service, method), [])
                    entries.extend((glob, f"{where}[{i}]") for glob in grant.paths)
        return {key: GlobIndex(entries) for key, entries in rules.items()}


DEFAULT_ADMIN_SOCKET = "/run/turret/admin.sock"


@dataclass(frozen=True)
class AdminSettings:
    """The config's `admin:`: where the admin socket is bound without socket activation (None:
    not bound) and who besides root and Turret's own uid may use it."""

    socket: str | None = None
    allow_uids: tuple[int, ...] = ()
    allow_group: str | None = None


@dataclass(frozen=True)
class ApprovalRule:
    """A grant's `approval:`: `required` (`when` is None) or only for calls whose parameters
    meet every constraint of `when` (a parameter the call lacks counts as met: fail closed)."""

    when: tuple[tuple[str, Constraint], ...] | None = None


@dataclass(frozen=True)
class ApprovalSettings:
    """The config's `approvals:`: how long a request waits for a person, and the capability
    Turret calls (as itself, with `notify_params` and a `message`) to tell the operator."""

    ttl: float = 900.0
    notify: str | None = None
    notify_params: tuple[tuple[str, ParamValue], ...] = ()


@dataclass(frozen=True)
class Config:
    listen: tuple[str, ...]
    credentials_dir: str | None
    services: dict[str, Service]
    agents: dict[str, Agent]
    capabilities: Mapping[str, Capability] = field(default_factory=dict)
    groups: Mapping[str, Group] = field(default_factory=dict)
    params_key: str | None = None  # credential keying the audit's parameter hashes
    limits: ServerLimits = field(default_factory=ServerLimits)
    admin: AdminSettings = field(default_factory=AdminSettings)
    digest: str = ""  # SHA-256 (16 hex) of the text it was read from: `turret status` shows it
    # Every credential the config uses, with its key-age policy (`credentials:`, defaults applied).
    credential_policy: Mapping[str, CredentialPolicy] = field(default_factory=dict)
    heartbeat: HeartbeatSettings | None = None  # the dead-man switch (turret.deadman)
    checkin: CheckinSettings | None = None
    opa: OpaSettings | None = None  # `policy.opa`: the external policy decision
    chain_key: str | None = None  # `audit.chain_key`: credential keying the audit chain
    approvals: ApprovalSettings = field(default_factory=ApprovalSettings)
    providers: Mapping[str, ProviderSpec] = field(default_factory=dict)  # `providers:`, by name
    alerts: AlertSettings | None = None  # `alerts:`: where a failed mint is notified



# --- capabilities and the rules about them ---------------------------------------------------

# What a parameter may hold once validated: JSON scalars, never null, lists or objects.
ParamValue = str | int | float | bool
Params = Mapping[str, ParamValue]
# Plain JSON data, as `json.loads` returns it.
JSON = Union[None, bool, int, float, str, list["JSON"], dict[str, "JSON"]]  # noqa: UP007 - recursive alias

PARAM_TYPES = ("string", "integer", "number", "boolean")
# A value of the template that Turret fills in itself: a fresh transaction id per call.
TXN_PLACEHOLDER = "$txn"


@dataclass(frozen=True)
class Param:
    """One parameter of a capability: its type and what values it accepts."""

    name: str
    type: str  # one of PARAM_TYPES
    description: str = ""
    required: bool = True
    default: ParamValue | None = None
    one_of: tuple[ParamValue, ...] | None = None
    pattern: str | None = None  # matched against the whole value (re.fullmatch, ASCII classes)
    minimum: float | None = None
    maximum: float | None = None
    max_length: int | None = None
    segments: int = 1  # in a path: how many "/"-separated segments the value fills
    # A catalog parameter's own parser (a magnet link): why a string is refused, or None. Runs
    # before `pattern`, so its refusal says what is wrong; `pattern` is what the schema lists.
    parse: Callable[[str], str | None] | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Constraint:
    """A narrowing of one parameter by a grant: every key set here must hold."""

    one_of: tuple[ParamValue, ...] | None = None
    pattern: str | None = None
    prefix: str | None = None
    max_length: int | None = None
    minimum: float | None = None
    maximum: float | None = None


@dataclass(frozen=True)
class Template:
    """How a call becomes an HTTP request; `{param}` marks where a parameter goes."""

    method: str
    path: str
    query: tuple[tuple[str, str], ...] = ()
    headers: tuple[tuple[str, str], ...] = ()
    body_kind: str | None = None  # "json", "form" (urlencoded) or "multipart"
    body: JSON = None  # json: any data; form and multipart: a mapping of field to template


@dataclass(frozen=True)
class Field:
    """A value picked out of the upstream's JSON by a dotted path ("data.status", "chunk.0")."""

    path: tuple[str, ...]


@dataclass(frozen=True)
class Each:
    """A list at `path`, each item projected by `item`, at most `limit` of them.

    Items where a path of `require` is missing or null are left out before the limit applies.
    """

    path: tuple[str, ...]
    item: Projection
    limit: int | None = None
    require: tuple[tuple[str, ...], ...] = ()


@dataclass(frozen=True)
class Shape:
    """An object whose keys are projected one by one."""

    fields: tuple[tuple[str, Projection], ...]


Projection = Field | Each | Shape

# A cross-parameter rule a catalog entry may add: (parameter, problem), or None if all is well.
ParamsCheck = Callable[[Params], tuple[str, str] | None]


@dataclass(frozen=True)
class Capability:
    """A named action on a service: `<service>.<action>`."""

    name: str
    service: str
    description: str
    params: tuple[Param, ...]
    request: Template
    result: Shape | None = None  # None: the agent gets {} (as little as is useful)
    log_params: tuple[str, ...] = ()  # parameters whose values the audit record may show
    ok_text: str | None = None  # the exact body a successful upstream answers with
    check: ParamsCheck | None = field(default=None, compare=False)
    origin: str = ""  # "catalog:<kind>" or the config key path

    def param(self, name: str) -> Param | None:
        """The parameter called `name`, or None."""
        return next((p for p in self.params if p.name == name), None)


@dataclass(frozen=True)
class CapabilityGrant:
    """Allows capabilities whose name matches the glob `name`, within `params` constraints."""

    name: str
    params: tuple[tuple[str, Constraint], ...]
    rule: str  # the dotted config path of this grant
    approval: ApprovalRule | None = None  # calls it allows wait for a person (turret.approval)


@dataclass(frozen=True)
class CapabilityDeny:
    """Denies capabilities whose name matches the glob `name`, whatever else allows them."""

    name: str
    rule: str


@dataclass(frozen=True)
class ProxyDeny:
    """Denies proxy requests matching service, method and path, whatever else allows them."""

    service: str
    methods: frozenset[str]
    paths: tuple[PathGlob, ...]
    rule: str


DenyRule = CapabilityDeny | ProxyDeny


@dataclass(frozen=True)
class Group:
    """Rules shared by every agent whose name matches one of `agents` (globs such as `ops/*`)."""

    name: str
    agents: tuple[str, ...]
    capabilities: tuple[CapabilityGrant, ...] = ()
    deny: tuple[DenyRule, ...] = ()
    proxy: tuple[ProxyGrant, ...] = ()
    max_ttl: float | None = None  # derived tokens of its agents: see turret.tokens
    may_derive: bool | None = None
    bind: PeerBinding | None = None  # every binding of an agent's groups applies too
    require_contained: bool = False


# --- what an agent asks for ---------------------------------------------------------------------


@dataclass(frozen=True)
class ProxyAction:
    """A proxied request: to `service`, `method` on the canonical `path`."""

    service: str
    method: str
    path: CanonicalPath


@dataclass(frozen=True)
class CapabilityAction:
    """A capability call with checked parameters."""

    capability: Capability
    params: Params


Action = ProxyAction | CapabilityAction


# --- what goes upstream and what comes back ------------------------------------------------------


@dataclass(frozen=True)
class Outbound:
    """A checked request: canonical path, raw query, whole body, and the headers that may go
    upstream (the caller's, filtered, or a template's; the credential is added on the way out)."""

    method: str
    path: CanonicalPath
    query: str
    headers: CIMultiDict[str]
    body: bytes


@dataclass(frozen=True)
class UpstreamResponse:
    """An upstream's whole answer, its headers filtered and everything redacted."""

    status: int
    headers: CIMultiDict[str]
    body: bytes
    redactions: int


# --- peer binding (turret.peers) -----------------------------------------------------------


@dataclass(frozen=True)
class PeerBinding:
    """An agent's or group's `bind:`: the uids (users resolved at load) and systemd units its
    tokens may be used from, on the agents' unix socket only. Any one entry is enough."""

    uids: frozenset[int] = frozenset()
    units: frozenset[str] = frozenset()

    def allows(self, uid: int | None, unit: str | None) -> bool:
        """Whether a peer with `uid` and `unit` (None: not known, or not a unix socket) is one
        of this binding's."""
        return (uid is not None and uid in self.uids) or (unit is not None and unit in self.units)
