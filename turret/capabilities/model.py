"""The values a capability and the rules about it are made of; frozen, no behaviour, no I/O."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Union

from turret.paths import PathGlob

if TYPE_CHECKING:
    from turret.config import ProxyGrant

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
