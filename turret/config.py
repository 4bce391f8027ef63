"""Configuration: the YAML file read into frozen values and validated; only `read_config` does I/O.

Nothing secret is ever in the file: only credential names and token hashes. Every problem is
reported with its dotted key path and line, all at once, and Turret refuses to start on any.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any

from turret import limit_settings
from turret.capabilities import settings as capability_settings
from turret.capabilities.model import Capability, CapabilityGrant, DenyRule, Group
from turret.checker import Checker
from turret.errors import ConfigError, ConfigIssue
from turret.netpolicy import AddressPolicy, service_url
from turret.paths import GlobIndex, PathGlob, compile_glob
from turret.ratelimit import AgentLimits, ServerLimits
from turret.yamlload import YamlError, join, read_yaml

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")
AGENT_NAME = re.compile(r"[a-z0-9][a-z0-9_.@/-]{0,127}")
HEADER_NAME = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]{1,128}")
QUERY_NAME = re.compile(r"[A-Za-z0-9_.~-]{1,128}")
SHA256_HEX = re.compile(r"[0-9a-f]{64}")
LISTEN_TCP = re.compile(r"(?P<host>\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):(?P<port>[0-9]{1,5})")
# Credential names are file names in $CREDENTIALS_DIRECTORY (systemd allows no "/").
CREDENTIAL_NAME = re.compile(r"[A-Za-z0-9_.@-]{1,128}")


@dataclass(frozen=True)
class CredentialRef:
    """A value to be read from the credential `name`."""

    name: str


Value = str | CredentialRef  # a literal, or a credential


@dataclass(frozen=True)
class BearerAuth:
    credential: str


@dataclass(frozen=True)
class BasicAuth:
    username: Value
    password: Value


@dataclass(frozen=True)
class HeaderAuth:
    name: str
    credential: str
    prefix: str = ""


@dataclass(frozen=True)
class QueryAuth:
    name: str
    credential: str


@dataclass(frozen=True)
class LoginAuth:
    """qBittorrent's WebUI login: Turret logs in and keeps the session cookie to itself."""

    username: Value
    password: Value


Auth = BearerAuth | BasicAuth | HeaderAuth | QueryAuth | LoginAuth


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

    def credential_uses(self) -> dict[str, str]:
        """Every credential name the config references, mapped to how it is used.

        The use is "header" when the value is sent in an HTTP header as is (so CR, LF and NUL
        would be header injection) and "value" otherwise.
        """
        uses: dict[str, str] = {}
        for svc in self.services.values():
            auth = svc.auth
            if isinstance(auth, BearerAuth | HeaderAuth):
                uses[auth.credential] = "header"
            elif isinstance(auth, QueryAuth):
                uses.setdefault(auth.credential, "value")
            else:  # basic and login
                for v in (auth.username, auth.password):
                    if isinstance(v, CredentialRef):
                        uses.setdefault(v.name, "value")
        for agent in self.agents.values():
            if agent.token_credential:
                uses.setdefault(agent.token_credential, "value")
        if self.params_key:
            uses.setdefault(self.params_key, "value")
        return uses


def read_config(path: str | Path) -> Config:
    """Read and validate the configuration file at `path`."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([ConfigIssue("", None, f"cannot read {path}: {exc}")]) from None
    return load_config(text)


def load_config(text: str) -> Config:
    """Validate configuration text; raise `ConfigError` listing every problem."""
    try:
        doc = read_yaml(text)
    except YamlError as exc:
        raise ConfigError(exc.issues) from None
    checker = _ConfigReader(doc)
    config = checker.config(doc.data)
    if checker.issues or config is None:
        raise ConfigError(checker.issues)
    return config


# Per-service numbers: default, lowest, highest, whether an integer.
_SERVICE_NUMBERS: dict[str, tuple[float, float, float, bool]] = {
    "timeout": (10, 0.1, 3600, False),
    "max_request_bytes": (1 << 20, 0, 1 << 30, True),
    "max_response_bytes": (4 << 20, 0, 1 << 30, True),
}


class _ConfigReader(Checker):
    """Reads each section of the configuration, reporting through the `Checker`."""

    def config(self, data: Any) -> Config | None:
        top = self.mapping(
            "",
            {} if data is None else data,
            set(),
            {
                "listen",
                "credentials_dir",
                "services",
                "agents",
                "capabilities",
                "groups",
                "audit",
                "limits",
            },
        )
        if top is None:
            return None
        listen = tuple(
            self.listen(p, v) or "" for p, v in self.items("listen", top.get("listen", []))
        )
        creds_dir = top.get("credentials_dir")
        if creds_dir is not None:
            creds_dir = self.string("credentials_dir", creds_dir)
        services = self.named("services", top.get("services"), self.service)
        caps = capability_settings.read_capabilities(self, top.get("capabilities"), services)
        groups = capability_settings.read_groups(self, top.get("groups"), caps, services)
        limits = limit_settings.read_limits(self, top.get("limits", {}))
        agents = self.named(
            "agents",
            top.get("agents"),
            lambda p, n, b: self.agent(p, n, b, services, caps, limits=limits.agent),
        )
        agents = {
            n: replace(a, groups=capability_settings.groups_of(n, groups))
            for n, a in agents.items()
        }
        params_key = capability_settings.read_audit(self, top.get("audit"))
        return Config(listen, creds_dir, services, agents, caps, groups, params_key, limits)

    def listen(self, path: str, value: Any) -> str | None:
        text = self.string(path, value)
        if text is None:
            return None
        if text.startswith("unix:"):
            if not text[5:].startswith("/"):
                self.fail(path, "a unix socket address must be an absolute path: unix:/run/x.sock")
            return text
        m = LISTEN_TCP.fullmatch(text)
        if not m or not 0 < int(m["port"]) < 65536:
            self.fail(path, f"{text!r} must be HOST:PORT, [IPv6]:PORT or unix:/PATH")
        return text

    def service(self, path: str, name: str, body: Any) -> Service | None:
        if not NAME.fullmatch(name):
            self.fail(path, f"service name must match {NAME.pattern}")
        keys = {*_SERVICE_NUMBERS, "kind", "node", "allow_networks", "magnet"}
        svc = self.mapping(path, body, {"url", "auth"}, keys)
        if svc is None:
            return None
        url = self.url(join(path, "url"), svc.get("url"))
        auth = self.auth(join(path, "auth"), svc.get("auth"))
        limits = {
            key: self.number(join(path, key), svc.get(key, default), lo, hi, integer=integer)
            for key, (default, lo, hi, integer) in _SERVICE_NUMBERS.items()
        }
        policy = limit_settings.read_address_policy(
            self, join(path, "allow_networks"), svc.get("allow_networks", [])
        )
        kind, node = capability_settings.read_kind_and_node(self, path, svc, auth)
        trackers = capability_settings.read_magnet(self, join(path, "magnet"), svc, kind)
        if url is None or auth is None or None in limits.values() or kind is False:
            return None
        return Service(
            name,
            url,
            auth,
            float(limits["timeout"]),
            limits["max_request_bytes"],
            limits["max_response_bytes"],
            kind or None,
            node,
            policy,
            trackers,
        )

    def url(self, path: str, value: Any) -> str | None:
        text = self.string(path, value)
        if text is None:
            return None
        try:
            return service_url(text)
        except ValueError as exc:
            self.fail(path, str(exc))
            return None

    def auth(self, path: str, value: Any) -> Auth | None:
        kinds = {"bearer", "basic", "header", "query", "login"}
        body = self.mapping(path, value, set(), kinds)
        if body is None:
            return None
        if len(body) != 1:
            self.fail(path, "must have exactly one of: bearer, basic, header, query, login")
            return None
        ((kind, spec),) = body.items()
        p = join(path, kind)
        if kind == "bearer":
            cred = self.string(p, spec, CREDENTIAL_NAME)
            return BearerAuth(cred) if cred else None
        if kind in ("basic", "login"):
            m = self.mapping(p, spec, {"username", "password"}, set())
            if m is None:
                return None
            user = self.value(join(p, "username"), m.get("username"))
            password = self.value(join(p, "password"), m.get("password"))
            if user is None or password is None:
                return None
            return BasicAuth(user, password) if kind == "basic" else LoginAuth(user, password)
        if kind == "header":
            m = self.mapping(p, spec, {"name", "value"}, {"prefix"})
            if m is None:
                return None
            name = self.string(join(p, "name"), m.get("name"), HEADER_NAME)
            cred = self.string(join(p, "value"), m.get("value"), CREDENTIAL_NAME)
            prefix = m.get("prefix", "")
            if not isinstance(prefix, str) or any(c in prefix for c in "\r\n\0"):
                self.fail(join(p, "prefix"), "must be a string without CR, LF or NUL")
                return None
            return HeaderAuth(name, cred, prefix) if name and cred else None
        m = self.mapping(p, spec, {"name", "value"}, set())
        if m is None:
            return None
        name = self.string(join(p, "name"), m.get("name"), QUERY_NAME)
        cred = self.string(join(p, "value"), m.get("value"), CREDENTIAL_NAME)
        return QueryAuth(name, cred) if name and cred else None

    def value(self, path: str, value: Any) -> Value | None:
        if isinstance(value, dict):
            m = self.mapping(path, value, {"credential"}, set())
            name = self.string(
                join(path, "credential"), m.get("credential") if m else None, CREDENTIAL_NAME
            )
            return CredentialRef(name) if name else None
        text = self.string(path, value)
        if text is not None and any(c in text for c in "\r\n\0:"):
            self.fail(path, "a literal must not contain ':', CR, LF or NUL")
            return None
        return text

    def agent(
        self,
        path: str,
        name: str,
        body: Any,
        services: dict[str, Service],
        caps: Mapping[str, Capability],
        *,
        limits: AgentLimits,
    ) -> Agent | None:
        if not AGENT_NAME.fullmatch(name):
            self.fail(path, f"agent name must match {AGENT_NAME.pattern}")
        keys = {"token_sha256", "token_credential", "proxy", "capabilities", "deny", "report"}
        keys.add("limits")
        a = self.mapping(path, body, set(), keys)
        if a is None:
            return None
        if ("token_sha256" in a) == ("token_credential" in a):
            self.fail(path, "needs exactly one of token_sha256 and token_credential")
            return None
        digest = cred = None
        if "token_sha256" in a:
            digest = self.string(join(path, "token_sha256"), a["token_sha256"], SHA256_HEX)
        else:
            cred = self.string(
                join(path, "token_credential"), a["token_credential"], CREDENTIAL_NAME
            )
        grants = [
            read_proxy_grant(self, p, g, services)
            for p, g in self.items(join(path, "proxy"), a.get("proxy", []))
        ]
        capabilities = capability_settings.read_grants(
            self, join(path, "capabilities"), a.get("capabilities"), caps
        )
        deny = capability_settings.read_deny(
            self, join(path, "deny"), a.get("deny"), caps, services
        )
        report = a.get("report", False)
        if not isinstance(report, bool):
            self.fail(join(path, "report"), "must be true or false")
        agent_limits = limit_settings.read_agent_limits(
            self, join(path, "limits"), a.get("limits", {}), limits
        )
        if digest is None and cred is None:
            return None
        proxy = tuple(g for g in grants if g is not None)
        return Agent(
            name, digest, cred, proxy, capabilities, deny, report is True, limits=agent_limits
        )


def read_proxy_grant(
    ck: Checker, path: str, value: Any, services: Mapping[str, Service]
) -> ProxyGrant | None:
    """A proxy grant `{service, methods, paths}` (also the shape of a proxy deny rule)."""
    g = ck.mapping(path, value, {"service", "methods", "paths"}, set())
    if g is None:
        return None
    service = ck.string(join(path, "service"), g.get("service"))
    if service is not None and service not in services:
        ck.fail(join(path, "service"), f"names undefined service {service!r}")
        service = None
    methods, paths, ok = set(), [], True
    method_items = ck.items(join(path, "methods"), g.get("methods", []))
    for p, m in method_items:
        # isinstance first: a YAML list or mapping here is unhashable, and must be an error
        # message, not a TypeError (which would also end a running Turret on reload).
        if not isinstance(m, str) or m not in METHODS:
            ck.fail(p, f"must be one of {', '.join(sorted(METHODS))}")
            ok = False
        else:
            methods.add(m)
    path_items = ck.items(join(path, "paths"), g.get("paths", []))
    for p, pattern in path_items:
        try:
            paths.append(compile_glob(pattern if isinstance(pattern, str) else ""))
        except ValueError as exc:
            ck.fail(p, f"path glob {exc}")
            ok = False
    if not method_items or not path_items:
        ck.fail(path, "a grant needs at least one method and one path")
        ok = False
    if service is None or not ok:
        return None
    return ProxyGrant(service, frozenset(methods), tuple(paths))
