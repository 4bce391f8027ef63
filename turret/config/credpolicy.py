"""Reading key-age policy and health checks: `credentials:` (per credential name),
`credentials_defaults:` (for every credential) and a service's `check:`.

    credentials_defaults: {max_age: 180d}
    credentials:
      gitea-token: {max_age: 90d, warn_before: 14d, owner: alice, rotate_hint: "Gitea > Settings"}
    services:
      gitea: {url: ..., auth: ..., check: {method: GET, path: /api/v1/user, expect_status: 200}}

A name under `credentials:` that no service, agent or `audit.params_key` uses is refused (a typo
would otherwise leave a credential unwatched), and so is `enforce_max_age` without a `max_age`
or on a credential no service uses (an agent's token or the audit key is never "not used").
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any

from turret.authkinds import credential_uses
from turret.config.checker import Checker
from turret.config.leases import parse_duration
from turret.config.yamlload import join
from turret.credmodel import DEFAULT_WARN_BEFORE, KIND_CHECKS, CredentialPolicy, HealthCheck
from turret.errors import BadRequest
from turret.model import CREDENTIAL_NAME, METHODS, Config
from turret.paths import canonical_path

POLICY_KEYS = {"max_age", "warn_before", "owner", "rotate_hint", "enforce_max_age"}
MAX_DURATION = 3660 * 86400.0  # ten years: anything longer is a typo
MAX_TEXT = 500
CHECK_PATH = re.compile(r"/[A-Za-z0-9._~!$&'()*+,;=:@%/-]{0,1023}")


def with_policy(ck: Checker, top: dict[str, Any], config: Config) -> Config:
    """`config` with the effective policy of every credential it uses (defaults applied)."""
    defaults = CredentialPolicy()
    if "credentials_defaults" in top:
        defaults = _policy(ck, "credentials_defaults", top["credentials_defaults"], defaults)
    used = credential_uses(config)
    by_service = {n for s in config.services.values() for n in s.auth.uses()}
    policies = dict.fromkeys(used, defaults)
    raw = top.get("credentials")
    for name, body in raw.items() if isinstance(raw, dict) else ():
        path = join("credentials", str(name))
        if not isinstance(name, str) or not CREDENTIAL_NAME.fullmatch(name):
            ck.fail(path, f"credential name must match {CREDENTIAL_NAME.pattern}")
        elif name not in used:
            ck.fail(path, "no service, agent or audit.params_key uses this credential")
        else:
            policies[name] = _policy(ck, path, body, defaults)
            if policies[name].enforce_max_age and name not in by_service:
                ck.fail(join(path, "enforce_max_age"), "only a credential a service uses can be")
    if raw is not None and not isinstance(raw, dict):
        ck.fail("credentials", "must be a mapping")
    return replace(config, credential_policy=policies)


def _policy(ck: Checker, path: str, body: Any, base: CredentialPolicy) -> CredentialPolicy:
    spec = ck.mapping(path, {} if body is None else body, set(), POLICY_KEYS)
    if spec is None:
        return base
    max_age = _duration(ck, join(path, "max_age"), spec, base.max_age)
    warn = _duration(ck, join(path, "warn_before"), spec, base.warn_before) or DEFAULT_WARN_BEFORE
    enforce = spec.get("enforce_max_age", base.enforce_max_age)
    if not isinstance(enforce, bool):
        ck.fail(join(path, "enforce_max_age"), "must be true or false")
        enforce = False
    if enforce and max_age is None:
        ck.fail(join(path, "enforce_max_age"), "needs a max_age")
    if max_age is not None and warn >= max_age:
        # Said where the operator can fix it: the warn_before they wrote, else this max_age.
        where = join(path, "warn_before" if "warn_before" in spec else "max_age")
        ck.fail(where, f"warn_before ({warn / 86400:g}d) must be shorter than max_age")
    return CredentialPolicy(
        max_age,
        warn,
        _text(ck, join(path, "owner"), spec, base.owner),
        _text(ck, join(path, "rotate_hint"), spec, base.rotate_hint),
        enforce,
    )


def _duration(ck: Checker, path: str, spec: dict[str, Any], default: float | None) -> float | None:
    key = path.rpartition(".")[2]
    if key not in spec:
        return default
    seconds = parse_duration(spec[key])
    if seconds is None or seconds > MAX_DURATION:
        ck.fail(path, "must be a duration in s, m, h or d (90d, 12h, 1d12h), at most 3660d")
        return default
    return seconds


def _text(ck: Checker, path: str, spec: dict[str, Any], default: str | None) -> str | None:
    key = path.rpartition(".")[2]
    if key not in spec:
        return default
    text = spec[key]
    if not isinstance(text, str) or not text.strip() or not text.isprintable():
        ck.fail(path, "must be a non-empty line of printable text")
        return default
    if len(text) > MAX_TEXT:
        ck.fail(path, f"must be at most {MAX_TEXT} characters")
        return default
    return text


def read_check(ck: Checker, path: str, svc: dict[str, Any], kind: object) -> HealthCheck | None:
    """A service's `check:` (or `check: false` for none); else its catalog kind's default."""
    if "check" not in svc:
        return KIND_CHECKS.get(kind) if isinstance(kind, str) else None
    if svc["check"] is False:
        return None
    spec = ck.mapping(path, svc["check"], {"path"}, {"method", "expect_status"})
    if spec is None:
        return None
    method = spec.get("method", "GET")
    if method not in METHODS:
        ck.fail(join(path, "method"), f"must be one of {', '.join(sorted(METHODS))}")
    check_path = ck.string(join(path, "path"), spec.get("path"), CHECK_PATH)
    expect = ck.number(join(path, "expect_status"), spec.get("expect_status", 200), 100, 599,
                       integer=True)  # fmt: skip
    if check_path is not None:
        try:
            # A directory-style path (Home Assistant's `/api/`, the default check) is
            # canonical but for its one trailing slash, which the request keeps.
            trailing = len(check_path) > 1 and check_path.endswith("/")
            canonical_path(check_path[:-1] if trailing else check_path)
        except BadRequest as exc:
            ck.fail(join(path, "path"), str(exc))
            check_path = None
    if check_path is None or expect is None or method not in METHODS:
        return None
    return HealthCheck(method, check_path, expect)
