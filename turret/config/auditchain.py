"""Reading `audit.chain_key`: the credential keying the tamper-evident audit chain."""

from __future__ import annotations

from typing import Any

import turret.model as base
from turret.config.checker import Checker
from turret.config.yamlload import join


def read_chain_key(ck: Checker, value: Any) -> str | None:
    """`audit: {chain_key: CREDENTIAL}`, a credential of its own (not `params_key`'s: a key
    that is also used elsewhere widens who can forge a chain)."""
    if not isinstance(value, dict) or "chain_key" not in value:
        return None  # `read_audit` reports an `audit:` that is not a mapping
    path = join("audit", "chain_key")
    name = ck.string(path, value["chain_key"], base.CREDENTIAL_NAME, quote=False)
    if name is not None and name == value.get("params_key"):
        ck.fail(path, "must be another credential than audit.params_key")
    return name
