"""Reading the config's `policy:` section: the external policy decision (`policy.opa`)."""

from __future__ import annotations

import re
from typing import Any

from turret.config.checker import Checker
from turret.netpolicy import service_url
from turret.opa import OpaSettings

# A rule's path under /v1/data/: package segments and the rule name, as OPA writes them.
RULE_PATH = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}(?:/[A-Za-z_][A-Za-z0-9_]{0,63}){0,15}")
_TIMEOUT = (0.01, 30.0)


def read_policy(ck: Checker, value: Any) -> OpaSettings | None:
    """`policy: {opa: {url, path, timeout}}`; None when there is no external policy."""
    if value is None:
        return None
    spec = ck.mapping("policy", value, set(), {"opa"})
    if spec is None or spec.get("opa") is None:
        return None
    opa = ck.mapping("policy.opa", spec["opa"], {"url"}, {"path", "timeout"})
    if opa is None:
        return None
    url = _url(ck, opa["url"]) if "url" in opa else None
    path = ck.string("policy.opa.path", opa.get("path", "turret/allow"), RULE_PATH)
    lo, hi = _TIMEOUT
    timeout = ck.number("policy.opa.timeout", opa.get("timeout", 0.5), lo, hi, integer=False)
    if url is None or path is None or timeout is None:
        return None
    return OpaSettings(url, path, float(timeout))


def _url(ck: Checker, value: Any) -> str | None:
    """`http(s)://host:port[/base]` or `unix:/absolute/path` (OPA's `--addr unix://...`)."""
    text = ck.string("policy.opa.url", value)
    if text is None:
        return None
    if text.startswith("unix:"):
        if not text[5:].startswith("/") or "\0" in text:
            ck.fail("policy.opa.url", "a unix socket must be an absolute path: unix:/run/opa.sock")
            return None
        return text
    try:
        return service_url(text)
    except ValueError as exc:
        ck.fail("policy.opa.url", f"{exc} (or unix:/PATH)")
        return None
