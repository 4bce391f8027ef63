"""Configuration: the YAML file read into frozen values and validated; only `read_config` does I/O.

Nothing secret is ever in the file: only credential names and token hashes. Every problem is
reported with its dotted key path and line, all at once, and Turret refuses to start on any.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import turret.config.cloud  # noqa: F401 - registers the vault, aws_sts and aws_secrets types
from turret.authkinds import read_auth
from turret.config import capabilities as capability_settings
from turret.config import credpolicy
from turret.config import limits as limit_settings
from turret.config import providers as provider_settings
from turret.config.admin import read_admin
from turret.config.alerts import read_alerts
from turret.config.approvals import read_approvals
from turret.config.auditchain import read_chain_key
from turret.config.bind import BIND_KEYS, read_bind_settings
from turret.config.checker import Checker
from turret.config.heartbeat import read_deadman
from turret.config.leases import DERIVE_KEYS, read_derive_settings, read_expires
from turret.config.opa import read_policy
from turret.config.proxy import read_proxy_grant
from turret.config.yamlload import join, read_yaml
from turret.errors import ConfigError, ConfigIssue, YamlError
from turret.model import (
    AGENT_NAME,
    CREDENTIAL_NAME,
    LISTEN_TCP,
    NAME,
    SHA256_HEX,
    AdminSettings,
    Agent,
    Capability,
    Config,
    Service,
)
from turret.ratelimit import AgentLimits


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
    return replace(config, digest=hashlib.sha256(text.encode()).hexdigest()[:16])


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
                "admin",
                "credentials",
                "credentials_defaults",
                "heartbeat",
                "checkin",
                "policy",
                "approvals",
                "providers",
                "alerts",
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
        chain_key = read_chain_key(self, top.get("audit"))
        admin = read_admin(self, top["admin"]) if "admin" in top else AdminSettings()
        providers = provider_settings.read_providers(self, top.get("providers"))
        services = provider_settings.check_services(
            self,
            services=services,
            providers=providers,
            capabilities=caps,
            agents=agents,
            groups=groups,
        )
        alerts = read_alerts(self, top.get("alerts"), caps)
        heartbeat, checkin = read_deadman(self, top)
        config = Config(
            listen, creds_dir, services, agents, caps, groups, params_key, limits, admin,
            heartbeat=heartbeat, checkin=checkin, opa=read_policy(self, top.get("policy")),
            chain_key=chain_key, approvals=read_approvals(self, top.get("approvals", {}), caps),
            providers=providers, alerts=alerts,
        )  # fmt: skip
        return credpolicy.with_policy(self, top, config)

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
        keys = {*_SERVICE_NUMBERS, "kind", "node", "allow_networks", "magnet", "check"}
        svc = self.mapping(path, body, {"url", "auth"}, keys)
        if svc is None:
            return None
        url = self.url(join(path, "url"), svc.get("url"))
        auth = read_auth(self, join(path, "auth"), svc.get("auth"))
        limits = {
            key: self.number(join(path, key), svc.get(key, default), lo, hi, integer=integer)
            for key, (default, lo, hi, integer) in _SERVICE_NUMBERS.items()
        }
        policy = limit_settings.read_address_policy(
            self, join(path, "allow_networks"), svc.get("allow_networks", [])
        )
        kind, node = capability_settings.read_kind_and_node(self, path, svc, auth)
        trackers = capability_settings.read_magnet(self, join(path, "magnet"), svc, kind)
        check = credpolicy.read_check(self, join(path, "check"), svc, kind)
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
            check=check,
        )

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
        keys |= {"limits", "expires", *DERIVE_KEYS, *BIND_KEYS}
        a = self.mapping(path, body, set(), keys)
        if a is None:
            return None
        if ("token_sha256" in a) == ("token_credential" in a):
            self.fail(path, "needs exactly one of token_sha256 and token_credential")
            return None
        digest = cred = None
        if "token_sha256" in a:
            # Not quoted when refused: a raw token pasted here instead of its hash is a secret.
            digest = self.string(
                join(path, "token_sha256"), a["token_sha256"], SHA256_HEX, quote=False
            )
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
        max_ttl, may_derive = read_derive_settings(self, path, a)
        expires = read_expires(self, path, a)
        bind, contained = read_bind_settings(self, path, a)
        if digest is None and cred is None:
            return None
        proxy = tuple(g for g in grants if g is not None)
        return Agent(
            name,
            digest,
            cred,
            proxy,
            capabilities,
            deny,
            report is True,
            limits=agent_limits,
            max_ttl=max_ttl,
            may_derive=may_derive,
            expires=expires,
            bind=bind,
            require_contained=contained,
        )
