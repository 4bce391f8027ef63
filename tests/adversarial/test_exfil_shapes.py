"""Exfiltration guard: agent tokens by shape, in every view, and header names.

Attack: a prompt-injected agent sends an agent token (its own, another agent's that has never
authenticated since start, or any token-shaped value) to an allowed upstream, hidden in an
encoding, split by escapes, or as a header name.
"""

from __future__ import annotations

import base64
from collections.abc import Callable

import pytest
from multidict import CIMultiDict

from tests.adversarial.conftest import Hardened, error_of
from tests.adversarial.test_echo_views import ENCODERS, _wrap
from turret.auth import new_token
from turret.echo import MARKER, Redactor
from turret.exfil import TokenGuard, find_secret, scrub_text

TOKEN = new_token()


def _split_by_escapes(token: str) -> bytes:
    """The token in a JSON string, its `_` and a few more characters written as escapes."""
    escaped = "".join(f"\\u{ord(c):04x}" for c in token[6:12])
    return b'{"t": "' + (token[:6] + escaped + token[12:]).encode() + b'"}'


SHAPE_FORMS: dict[str, Callable[[str], bytes]] = {
    **{name: ENCODERS[name] for name in sorted(ENCODERS) if name != "json-one-char-escaped"},
    "raw": lambda t: t.encode(),
    "pct-prefix-underscore-only": lambda t: t.replace("_", "%5F", 1).encode(),
    "pct-one-char-in-body": lambda t: (t[:20] + f"%{ord(t[20]):02X}" + t[21:]).encode(),
    "json-split": _split_by_escapes,
    "html-lowbar": lambda t: t.replace("_", "&lowbar;", 1).encode(),
    "base64-std": lambda t: base64.b64encode(t.encode()),
    "base64-url-embedded": lambda t: base64.urlsafe_b64encode(b"my token is " + t.encode()),
    "base64-embedded-offset-1": lambda t: base64.b64encode(b"x" + t.encode() + b"y"),
    "base64-mime-1": lambda t: _wrap(base64.b64encode(t.encode()), 1, b"\n"),
    "base64-of-utf16": lambda t: base64.b64encode(t.encode("utf-16-le")),
    "longer-token": lambda t: (t + "AbC-_9" * 5).encode(),
    "utf16-odd-offset-be": lambda t: b"x" + t.encode("utf-16-be"),
    "utf32-offset-3": lambda t: b"abc" + t.encode("utf-32-le"),
}


@pytest.mark.parametrize("how", sorted(SHAPE_FORMS))
def test_exfil_token_shape_found_in_every_view(how: str) -> None:
    """No token was ever remembered: the shape alone is enough."""
    guard = TokenGuard()
    data = b"comment: " + SHAPE_FORMS[how](new_token()) + b" thanks"
    assert guard.redactor.found(data)


@pytest.mark.parametrize(
    "data",
    [
        b"turret_" + b"A" * 42,  # one character short
        b"turret_configuration is documented in README",
        b"see turret_ and then, a sentence that goes on and on and on",
        b"TURRET_" + b"a" * 50,  # the prefix is lowercase
    ],
)
def test_exfil_token_shape_spares_what_is_not_a_token(data: bytes) -> None:
    assert not TokenGuard().redactor.found(data)


def test_exfil_remembered_token_of_another_form_still_guarded() -> None:
    guard = TokenGuard()
    legacy = "legacy-agent-secret-0123456789"
    assert not guard.redactor.found(legacy.encode())
    guard.remember(legacy)
    assert guard.redactor.found(base64.b64encode(legacy.encode()))
    assert guard.redactor.found(TOKEN.encode())  # the shape is still searched


def _where(**parts: object) -> str | None:
    headers = CIMultiDict[str](parts.pop("headers", {}))  # type: ignore[arg-type]
    defaults: dict[str, object] = {"path": "/api", "query": "", "body": b""}
    kwargs = {**defaults, **parts}
    return find_secret(
        (Redactor([]), TokenGuard().redactor),
        path=str(kwargs["path"]),
        query=str(kwargs["query"]),
        headers=headers,
        body=kwargs["body"],  # type: ignore[arg-type]
    )


@pytest.mark.parametrize(
    ("parts", "where"),
    [
        ({"path": "/api/" + TOKEN.replace("_", "%5F", 1)}, "path"),
        ({"path": "/api/" + "".join(f"%25{ord(c):02x}" for c in TOKEN)}, "path"),
        ({"query": "q=" + TOKEN[:10] + "%" + f"{ord(TOKEN[10]):02x}" + TOKEN[11:]}, "query"),
        ({"headers": {"X-Note": TOKEN.encode().hex().upper()}}, "header X-Note"),
        ({"headers": {"X-" + TOKEN: "1"}}, "header name"),
        ({"headers": {"X-Ok": "1", TOKEN: "1"}}, "header name"),
        ({"body": TOKEN.encode("utf-16")}, "body"),
        ({"body": b"nothing here"}, None),
        ({"path": "/api/v1/repos/me/x", "query": "a=1&b=%2F"}, None),
    ],
)
def test_exfil_find_secret_names_the_place(parts: dict[str, object], where: str | None) -> None:
    found = _where(**parts)
    assert found == where
    assert found is None or TOKEN not in found


def test_exfil_scrub_text_in_place_or_whole() -> None:
    guards = (Redactor(["CANARY-x-0123456789"]), TokenGuard().redactor)
    assert scrub_text(f"/a/{TOKEN}/b", guards) == f"/a/{MARKER.decode()}/b"
    assert scrub_text("/a/CANARY-x-0123456789", guards) == f"/a/{MARKER.decode()}"
    assert scrub_text("/a/" + TOKEN.replace("_", "%5F"), guards) == MARKER.decode()
    assert scrub_text("/a/nothing", guards) == "/a/nothing"


# --- through a gateway -------------------------------------------------------------------------

ISSUE = "/v1/proxy/gitea/api/v1/repos/me/x/issues"


def _gateway_cases(gw: Hardened) -> dict[str, tuple[str, dict[str, object]]]:
    other, fresh = gw.other_token, new_token()
    return {
        "never-seen-agent-token-in-body": (ISSUE, {"data": other.encode()}),
        "never-seen-agent-token-pct-partial-query": (
            ISSUE + "?n=" + other.replace("_", "%5f", 1),
            {},
        ),
        "unknown-token-shape-json-split": (ISSUE, {"data": _split_by_escapes(fresh)}),
        "unknown-token-shape-mime-base64": (
            ISSUE,
            {"data": _wrap(base64.b64encode(b"t=" + fresh.encode()), 76)},
        ),
        "unknown-token-shape-utf16": (ISSUE, {"data": fresh.encode("utf-16")}),
        "token-as-header-name": (ISSUE, {"headers": {"X-" + other: "1"}}),
    }


@pytest.mark.parametrize(
    "case",
    [
        "never-seen-agent-token-in-body",
        "never-seen-agent-token-pct-partial-query",
        "unknown-token-shape-json-split",
        "unknown-token-shape-mime-base64",
        "unknown-token-shape-utf16",
        "token-as-header-name",
    ],
)
async def test_exfil_gateway_refuses_token_shapes(hardened: Hardened, case: str) -> None:
    target, kwargs = _gateway_cases(hardened)[case]
    resp = await hardened.request("POST", target, **kwargs)
    assert resp.status == 403
    assert (await error_of(resp))["code"] == "credential_in_request"
    assert hardened.upstream.received == []
    reasons = [r.get("TURRET_REASON", "") for r in hardened.audit()]
    assert any("exfiltration guard" in r for r in reasons)
    assert not any(hardened.other_token in r for r in reasons)


async def test_exfil_gateway_refuses_a_credential_in_html_references(
    hardened: Hardened, canaries: dict[str, str]
) -> None:
    body = "".join(f"&#{ord(c)};" for c in canaries["api-key"]).encode()
    resp = await hardened.request("POST", ISSUE, data=body)
    assert resp.status == 403
    assert hardened.upstream.received == []
