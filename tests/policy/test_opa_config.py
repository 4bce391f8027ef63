"""`policy.opa` in the config: what is read, and every bad value refused with its key path and
line."""

from __future__ import annotations

import pytest

from turret.config import load_config
from turret.errors import ConfigError
from turret.opa import OpaSettings

BASE = """\
services:
  forge: {url: "http://127.0.0.1:3000", auth: {bearer: gitea-token}}
agents:
  alice: {token_sha256: "%s"}
""" % ("ab" * 32)


@pytest.mark.parametrize(
    ("section", "expected"),
    [
        ("", None),
        ("policy: {}\n", None),
        ("policy:\n  opa: {url: 'http://127.0.0.1:8181'}\n",
         OpaSettings("http://127.0.0.1:8181", "turret/allow", 0.5)),
        ("policy:\n  opa: {url: 'unix:/run/opa/opa.sock', path: authz/turret/allow, timeout: 2}\n",
         OpaSettings("unix:/run/opa/opa.sock", "authz/turret/allow", 2.0)),
        ("policy:\n  opa: {url: 'https://opa.internal:8443/', timeout: 0.05}\n",
         OpaSettings("https://opa.internal:8443", "turret/allow", 0.05)),
    ],
)  # fmt: skip
def test_opa_config_reads_policy_opa(section: str, expected: OpaSettings | None) -> None:
    assert load_config(BASE + section).opa == expected


@pytest.mark.parametrize(
    ("section", "where", "says"),
    [
        ("policy: [opa]\n", "policy", "must be a mapping"),
        ("policy: {rego: x}\n", "policy.rego", "unknown key"),
        ("policy:\n  opa: 'http://127.0.0.1:8181'\n", "policy.opa", "must be a mapping"),
        ("policy:\n  opa: {path: a/b}\n", "policy.opa", "missing required key 'url'"),
        ("policy:\n  opa: {url: 'http://x:1', bundle: y}\n", "policy.opa.bundle", "unknown key"),
        ("policy:\n  opa: {url: 'ftp://127.0.0.1'}\n", "policy.opa.url", "scheme"),
        ("policy:\n  opa: {url: 'http://u:p@127.0.0.1'}\n", "policy.opa.url", "user:password"),
        ("policy:\n  opa: {url: 'http://127.0.0.1:8181?x=1'}\n", "policy.opa.url", "query"),
        ("policy:\n  opa: {url: 'unix:run/opa.sock'}\n", "policy.opa.url", "absolute path"),
        ("policy:\n  opa: {url: ''}\n", "policy.opa.url", "non-empty string"),
        ("policy:\n  opa: {url: 'http://127.1:8181'}\n", "policy.opa.url", "dotted-quad"),
        ("policy:\n  opa: {url: 'http://x:1', path: ../admin}\n", "policy.opa.path", "must match"),
        ("policy:\n  opa: {url: 'http://x:1', path: /turret}\n", "policy.opa.path", "must match"),
        ("policy:\n  opa: {url: 'http://x:1', path: 'a//b'}\n", "policy.opa.path", "must match"),
        ("policy:\n  opa: {url: 'http://x:1', path: 'a?b'}\n", "policy.opa.path", "must match"),
        ("policy:\n  opa: {url: 'http://x:1', path: 'a/b/'}\n", "policy.opa.path", "must match"),
        ("policy:\n  opa: {url: 'http://x:1', timeout: 0}\n", "policy.opa.timeout", "number"),
        ("policy:\n  opa: {url: 'http://x:1', timeout: 60}\n", "policy.opa.timeout", "number"),
        ("policy:\n  opa: {url: 'http://x:1', timeout: true}\n", "policy.opa.timeout", "number"),
        ("policy:\n  opa: {url: 'http://x:1', timeout: 1s}\n", "policy.opa.timeout", "number"),
    ],
)
def test_opa_config_refuses_bad_values_with_the_key_path(
    section: str, where: str, says: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(BASE + section)
    (issue,) = info.value.issues
    assert issue.path == where and says in issue.message, str(info.value)
    assert issue.line is not None and issue.line >= 5
