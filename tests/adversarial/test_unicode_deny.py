# ruff: noqa: RUF001 - look-alike characters are the attack under test
"""Deny rules against every spelling an upstream could normalise to the denied path.

`opencode` may GET `/files/**`; the rules below deny some subtrees of it. Each variant is a
path that a normalising upstream (NFKC, case-insensitive, decoding twice, dropping invisible
characters) would read as a denied one. Grants are not widened: they match the exact form.
"""

from __future__ import annotations

import unicodedata
from urllib.parse import quote

import pytest

from tests.adversarial.conftest import MakeHardened
from turret.config import load_config
from turret.errors import BadRequest, ConfigError
from turret.model import Agent
from turret.paths import canonical_path
from turret.policy import decide_proxy

DENY_RULES = """    deny:
      - service: gitea
        methods: [GET]
        paths: ["/files/admin", "/files/admin/**", "/files/secrets/**", "/files/keys",
                "/files/k*s/*", "/files/café/**", "/files/straße/**", "/files/config/**"]
"""


def _math(text: str, start: int) -> str:
    """`text` in a Mathematical Alphanumeric Symbols alphabet starting at `start` (its 'a')."""
    return "".join(chr(start + ord(c) - ord("a")) for c in text)


# Decoded segments, each read as a denied one by some upstream; the tests percent-encode them.
VARIANTS = [
    pytest.param("ａｄｍｉｎ", id="fullwidth"),
    pytest.param("ＡＤＭＩＮ", id="fullwidth-upper"),
    pytest.param("ADMIN", id="upper"),
    pytest.param("Admin", id="title"),
    pytest.param("aDmIn", id="mixed-case"),
    pytest.param(_math("admin", 0x1D41A), id="math-bold"),
    pytest.param(_math("admin", 0x1D68A), id="math-monospace"),
    pytest.param(_math("admin", 0x1D552), id="math-double-struck"),
    pytest.param(_math("admin", 0x1D586), id="math-bold-fraktur"),
    pytest.param("ⓐⓓⓜⓘⓝ", id="circled"),
    pytest.param("ᵃᵈᵐⁱⁿ", id="superscript-modifiers"),
    pytest.param("adm\u0131n", id="dotless-i"),
    pytest.param("ADM\u0130N", id="dotted-capital-i"),
    pytest.param("ad\u00admin", id="soft-hyphen"),
    pytest.param("adm\u200bin", id="zero-width-space"),
    pytest.param("a\u200ddmin", id="zero-width-joiner"),
    pytest.param("admin\ufeff", id="byte-order-mark"),
    pytest.param("a\ufe0fdmin", id="variation-selector"),
    pytest.param("ad\U000e0041min", id="tag-character"),
    pytest.param("ａDｍİN", id="fullwidth-case-dotted-mix"),
    pytest.param("%61dmin", id="double-percent-encoded"),
    pytest.param("%41DMIN", id="double-percent-encoded-upper"),
    pytest.param("%EF%BD%81dmin", id="double-encoded-fullwidth"),
    pytest.param("\uff0561dmin", id="fullwidth-percent-escape"),
    pytest.param("\u017fecrets", id="long-s"),
    pytest.param("SECRETS", id="upper-secrets"),
    pytest.param("\u212aeys", id="kelvin-sign"),
    pytest.param("cafe\u0301", id="nfd-combining-acute"),
    pytest.param("CAFE\u0301", id="nfd-upper"),
    pytest.param("CAFÉ", id="nfc-upper"),
    pytest.param("STRASSE", id="sharp-s-expanded-upper"),
    pytest.param("stra\u1e9ee", id="capital-sharp-s"),
    pytest.param("con\ufb01g", id="fi-ligature"),
    pytest.param("CON\ufb01G", id="fi-ligature-upper"),
]


def _encoded(*segments: str) -> str:
    return "".join("/" + quote(s.encode(), safe="") for s in segments)


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
        paths: ["/files/**", "/api/v1/user"]
{DENY_RULES}""")
    return config.agents["a"]


@pytest.mark.parametrize("segment", VARIANTS)
def test_unicode_deny_variant_is_denied_by_policy(agent: Agent, segment: str) -> None:
    """Attack: a spelling of a denied path that an upstream normalises back to it."""
    for path in (_encoded("files", segment), _encoded("files", segment, "x")):
        decision = decide_proxy(agent, "gitea", "GET", canonical_path(path))
        assert not decision.allowed, path
        assert decision.rule == "agents.a.deny[0]"


@pytest.mark.parametrize("segment", VARIANTS)
async def test_unicode_deny_variant_never_reaches_upstream(
    make_hardened: MakeHardened, segment: str
) -> None:
    """Attack, through the gateway: 403, audited as a deny, the upstream never asked."""
    gw = await make_hardened(grants=DENY_RULES)
    resp = await gw.request("GET", "/v1/proxy/gitea" + _encoded("files", segment, "x"))
    assert resp.status == 403
    assert gw.upstream.received == []
    record = gw.audit()[-1]
    assert record["TURRET_DECISION"] == "deny"
    assert "agents.opencode.deny[0]" in record["TURRET_RULE"]


def test_unicode_deny_written_decomposed_matches_composed() -> None:
    """A deny glob written in NFD (as some editors save it) still denies the NFC path."""
    config = load_config(f"""
services:
  gitea: {{url: "http://127.0.0.1:1", auth: {{bearer: t}}}}
agents:
  a:
    token_sha256: "{"0" * 64}"
    proxy: [{{service: gitea, methods: [GET], paths: ["/**"]}}]
    deny: [{{service: gitea, methods: [GET], paths: ["/{unicodedata.normalize("NFD", "café")}"]}}]
""")
    for text in ("café", "CAFÉ", "ｃａｆé"):
        path = canonical_path(_encoded(unicodedata.normalize("NFC", text)))
        assert not decide_proxy(config.agents["a"], "gitea", "GET", path).allowed


@pytest.mark.parametrize(
    "segment", ["adminx", "administrator", "ａｂｃ", "日本語", "café-menu", "Straßenbahn", "%2541"]
)
def test_unicode_deny_does_not_refuse_other_paths(agent: Agent, segment: str) -> None:
    """Control: non-ASCII paths and near misses of a denied name stay allowed."""
    decision = decide_proxy(agent, "gitea", "GET", canonical_path(_encoded("files", segment)))
    assert decision.allowed, decision.reason


@pytest.mark.parametrize(
    "path", ["/api/v1/USER", "/api/v1/ｕｓｅｒ", "/API/v1/user", "/api/v1/us%C2%ADer"]
)
def test_unicode_grants_match_only_the_exact_form(agent: Agent, path: str) -> None:
    """Grants are not widened by the fold: only `/api/v1/user` as written is allowed."""
    canonical = canonical_path(_encoded(*path[1:].split("/")) if "%" not in path else path)
    assert not decide_proxy(agent, "gitea", "GET", canonical).allowed


@pytest.mark.parametrize(
    "segment", ["%EF%BC%852e", "\uff052e\uff052e", ".\u200b", "\u00ad..", "\uff052f"]
)
def test_unicode_normalised_dots_and_separators_refused(segment: str) -> None:
    """Attack: a segment that is '.', '..' or holds a '/' only once normalised (fullwidth percent
    escapes, invisible characters): refused outright, for grants and denies alike."""
    raw = "/files/" + (segment if "%" in segment else quote(segment.encode(), safe=""))
    with pytest.raises(BadRequest, match=r"dot segments|encoded '/'"):
        canonical_path(raw)


async def test_unicode_capability_names_never_reach_a_deny_glob(
    make_hardened: MakeHardened,
) -> None:
    """Capability names are ASCII: a fullwidth or percent-encoded name is refused before any
    rule is looked at, so `fnmatchcase` on names never meets Unicode."""
    gw = await make_hardened()
    for name in ("%EF%BD%87it.create_issue", "git.create%5Fissue", "GIT.create_issue"):
        resp = await gw.request("POST", "/v1/capabilities/" + name, json={})
        assert resp.status == 400, name
    assert gw.upstream.received == []


def test_unicode_capability_deny_glob_must_be_ascii() -> None:
    """A deny rule's name glob outside `[a-z0-9_.*-]` is a config error naming its key path."""
    with pytest.raises(ConfigError) as info:
        load_config(f"""
services:
  gitea: {{url: "http://127.0.0.1:1", auth: {{bearer: t}}}}
agents:
  a:
    token_sha256: "{"0" * 64}"
    deny: [{{name: "ｇｉｔ.*"}}]
""")
    assert "agents.a.deny[0].name" in str(info.value)
