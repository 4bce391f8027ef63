"""Red team, paths: what a lenient upstream reads a segment as, beyond Unicode folding.

Upstreams do more than NFKC and case folding. Windows/IIS and .NET drop trailing dots and
blanks from a segment (`admin.`, `.. `) and read `admin::$DATA` as `admin`; servlet containers
and the frameworks on them cut "path parameters" at `;`; a proxy or framework that decodes once
and re-parses ends the path at a decoded `?` or `#`; many collapse the empty segment that is
left (`/files/;x/admin`). Each is a dot segment (refused) or a deny bypass (now denied); grants
are not widened.
"""

from __future__ import annotations

import pytest

from tests.adversarial.conftest import MakeHardened
from turret.config import load_config
from turret.errors import BadRequest
from turret.model import Agent
from turret.paths import canonical_path
from turret.policy import decide_proxy

DENY_RULES = """    deny:
      - service: gitea
        methods: [GET]
        paths: ["/files/admin", "/files/admin/**"]
"""

DOT_SEGMENTS = [
    "..%20",
    ".%20",
    "%20..",
    "...",
    "%2E%2E%2E",
    "..%C2%A0",
    "..%E3%80%80",
    "..%E2%80%A8",
    "..%C2%85",
    "..%2520",
    "..%3F",
    "..%3Fx=1",
    "..%23",
    "..%23frag",
    "..%253F",
    "..%EF%BC%9F",
    "..%EF%BC%83",
    "..%EF%BC%8E",
    ".%EF%BC%8E%20",
    "..::$DATA",
    "..%3A%3A%24data",
]

DENY_VARIANTS = [
    "admin;x",
    "admin;",
    "admin%3Bx",
    "admin%253Bjsessionid=1",
    "admin%EF%BC%9Bx",
    "ADMIN;x",
    "admin.",
    "admin%2E",
    "admin..",
    "admin%20",
    "admin%20.%20",
    "admin%C2%A0",
    "admin%E3%80%80",
    "%20admin",
    "admin%3F",
    "admin%3Fq=1",
    "admin%23",
    "admin%23top",
    "admin%2523x",
    "admin%EF%BC%9Fx",
    "admin::$DATA",
    "admin%3A%3A%24DATA",
    "ADMIN::$Data",
]


@pytest.fixture(scope="module")
def agent() -> Agent:
    config = load_config(f"""
services:
  gitea: {{url: "http://127.0.0.1:1", auth: {{bearer: t}}}}
agents:
  a:
    token_sha256: "{"0" * 64}"
    proxy:
      - service: gitea
        methods: [GET]
        paths: ["/files/**"]
{DENY_RULES}""")
    return config.agents["a"]


@pytest.mark.parametrize("segment", DOT_SEGMENTS)
def test_redteam_paths_dot_segment_readings_refused(segment: str) -> None:
    """Attack: `/files/<segment>/admin` climbs out of a granted subtree on an upstream that
    trims the segment or cuts it at a decoded `?`/`#`."""
    with pytest.raises(BadRequest):
        canonical_path(f"/files/{segment}/admin")


@pytest.mark.parametrize("segment", DENY_VARIANTS)
def test_redteam_paths_deny_variant_is_denied(agent: Agent, segment: str) -> None:
    for path in (f"/files/{segment}", f"/files/{segment}/x"):
        decision = decide_proxy(agent, "gitea", "GET", canonical_path(path))
        assert not decision.allowed, path
        assert decision.rule == "agents.a.deny[0]"


@pytest.mark.parametrize("path", ["/files/;x/admin", "/files/%3B/admin/x", "/files/%20/admin"])
def test_redteam_paths_emptied_segment_is_collapsed(agent: Agent, path: str) -> None:
    """A segment that reads as empty is gone to an upstream that merges slashes."""
    assert not decide_proxy(agent, "gitea", "GET", canonical_path(path)).allowed


@pytest.mark.parametrize(
    "path",
    [
        "/files/administrator",
        "/files/admin.json",
        "/files/x/admin%3Bx",
        "/files/my%3Badmin",
        "/files/a%20b",
        "/files/report%3Fv2",
        "/files/x/admin",
    ],
)
def test_redteam_paths_other_paths_still_allowed(agent: Agent, path: str) -> None:
    assert decide_proxy(agent, "gitea", "GET", canonical_path(path)).allowed


@pytest.mark.parametrize("segment", ["admin%3Bx", "admin.", "admin%3Fx", "admin::$DATA"])
async def test_redteam_paths_deny_variant_never_reaches_upstream(
    make_hardened: MakeHardened, segment: str
) -> None:
    gw = await make_hardened(grants=DENY_RULES)
    resp = await gw.request("GET", f"/v1/proxy/gitea/files/{segment}/x")
    assert resp.status == 403
    assert gw.upstream.received == []
    assert gw.audit()[-1]["TURRET_DECISION"] == "deny"


async def test_redteam_paths_dot_segment_never_reaches_upstream(
    make_hardened: MakeHardened,
) -> None:
    gw = await make_hardened()
    resp = await gw.request("GET", "/v1/proxy/gitea/files/..%20/api/v1/user")
    assert resp.status == 400
    assert gw.upstream.received == []


@pytest.mark.parametrize(
    "segment",
    [
        "x%25EF%25BC%258Fy",  # fullwidth solidus, percent-encoded twice
        "x%2525EF%2525BC%25258Fy",  # ... three times
        "x%EF%BC%852Fy",  # fullwidth percent sign + "2F": NFKC then decode reads "/"
        "x%EF%BC%85%EF%BC%92%EF%BC%A6y",  # all three fullwidth
        "%25EF%25BC%258E%25EF%25BC%258E",  # fullwidth dots, encoded twice
        "%EF%BC%85%32%65%EF%BC%85%32%65",  # fullwidth "%" then "2e", twice
        "x%EF%B9%A8y",  # small reverse solidus
        "%E2%80%A4%E2%80%A4",  # one dot leader, twice
        "%E2%80%A5",  # two dot leader
        "%EF%B9%92",  # small full stop
        "%C0%AE%C0%AE",  # overlong UTF-8 dots
        "..%5C",
        "..%255c",
    ],
)
def test_redteam_paths_separators_at_every_depth_refused(segment: str) -> None:
    """Held before the red team: pinned so they keep holding."""
    with pytest.raises(BadRequest):
        canonical_path(f"/files/{segment}/admin")
