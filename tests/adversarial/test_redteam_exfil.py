"""Red team, exfiltration guard: token spellings the issue-10 suite did not try.

A token is 32 random bytes: whatever alphabet, letter case of the prefix or split carries those
bytes to a place the agent reads back gives the token away. Variants: the standard base64
alphabet, whitespace or a line break inside it (what a form field, a folded header or a text
area keeps), the prefix fullwidth (an upstream or a reader that normalises reads `turret_`),
the body alone without the prefix or with it in capitals (a token presented since start),
markup or invisible characters between its characters, quoted-printable.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from urllib.parse import quote

import pytest
from multidict import CIMultiDict

from tests.adversarial.conftest import Hardened, error_of
from turret.auth import TOKEN_PREFIX, new_token
from turret.exfil import TokenGuard, find_secret, scrub_text

TOKEN = new_token()
BODY = TOKEN[len(TOKEN_PREFIX) :]


def _fullwidth(s: str) -> str:
    return "".join(chr(ord(c) + 0xFEE0) if 0x21 <= ord(c) <= 0x7E else c for c in s)


def _standard(token: str) -> str:
    """The token with its body in the standard base64 alphabet."""
    return TOKEN_PREFIX + token[len(TOKEN_PREFIX) :].translate(str.maketrans("-_", "+/"))


FORMS: dict[str, Callable[[str], bytes]] = {
    "standard-alphabet": lambda t: _standard(t).encode(),
    "split-by-newline": lambda t: (t[:20] + "\n" + t[20:]).encode(),
    "split-by-crlf-and-spaces": lambda t: (t[:10] + "\r\n  " + t[10:30] + " " + t[30:]).encode(),
    "split-by-pct-0a": lambda t: (t[:20] + "%0A" + t[20:]).encode(),
    "split-by-form-plus": lambda t: ("q=" + t[:20] + "+" + t[20:]).encode(),
    "split-by-tab-in-json": lambda t: json.dumps(t[:20] + "\t" + t[20:]).encode(),
    "prefix-fullwidth": lambda t: (_fullwidth(TOKEN_PREFIX) + t[len(TOKEN_PREFIX) :]).encode(),
    "prefix-fullwidth-percent": lambda t: quote(_fullwidth(TOKEN_PREFIX) + t[7:]).encode(),
    "all-fullwidth": lambda t: _fullwidth(t).encode(),
    "fullwidth-low-line-only": lambda t: t.replace("_", "\uff3f", 1).encode(),
    "zero-width-inside": lambda t: (t[:12] + "\u200b" + t[12:]).encode(),
    "soft-hyphen-pct-inside": lambda t: quote(t[:12] + "\u00ad" + t[12:]).encode(),
    "tag-inside": lambda t: ("<p>" + t[:12] + "<b></b>" + t[12:] + "</p>").encode(),
    "cdata-split": lambda t: ("<![CDATA[" + t[:12] + "]]><![CDATA[" + t[12:] + "]]>").encode(),
    "quoted-printable": lambda t: b"".join(b"=%02X" % b for b in t.encode()),
    "qp-soft-break": lambda t: (t[:30] + "=\r\n" + t[30:]).encode(),
    "double-json-in-form": lambda t: (
        b"data="
        + quote(json.dumps(json.dumps({"t": "".join(f"\\u{ord(c):04x}" for c in t)}))).encode()
    ),
    "multipart-filename": lambda t: (
        b'--b\r\nContent-Disposition: form-data; name="f"; filename="'
        + t.encode()
        + b'"\r\n\r\nx\r\n--b--\r\n'
    ),
    "rfc2231-filename": lambda t: b"filename*=UTF-8''" + quote(t, safe="").encode(),
    "base64-of-standard-alphabet": lambda t: base64.b64encode(_standard(t).encode()),
    "standard-alphabet-in-path": lambda t: ("/a/" + _standard(t) + "/b").encode(),
}


def _found(data: bytes, guard: TokenGuard | None = None) -> bool:
    guards = ((guard or TokenGuard()).redactor,)
    return find_secret(guards, path="/x", query="", headers=CIMultiDict(), body=data) == "body"


@pytest.mark.parametrize("how", sorted(FORMS))
def test_redteam_exfil_token_spellings_are_refused(how: str) -> None:
    assert _found(b'{"comment": "' + FORMS[how](TOKEN) + b'"}')


@pytest.mark.parametrize(
    "how", ["raw", "pct-all", "base64", "split-by-space", "prefix-upper", "prefix-upper-hex"]
)
def test_redteam_exfil_presented_token_without_its_prefix(how: str) -> None:
    """The random part alone is the token to whoever knows the prefix: once a token has been
    presented, its body is guarded by value too."""
    forms = {
        "raw": BODY.encode(),
        "pct-all": "".join(f"%{b:02x}" for b in BODY.encode()).encode(),
        "base64": base64.b64encode(BODY.encode()),
        "split-by-space": (BODY[:20] + " " + BODY[20:]).encode(),
        # `TURRET_` is not the shape (environment variable names look like it), but the body is.
        "prefix-upper": ("TURRET_" + BODY).encode(),
        "prefix-upper-hex": ("TURRET_" + BODY).encode().hex().encode(),
    }
    guard = TokenGuard()
    assert not _found(forms[how], guard)  # unknown random text is not a token by shape
    guard.remember(TOKEN)
    assert _found(b"id: " + forms[how], guard)


@pytest.mark.parametrize(
    "data",
    [
        b"turret_ is the prefix, see the docs.",
        b"turret_short and turret_config_value_that_is_long, but ends here.",
        ("turret_" + "A" * 42).encode(),
        b"the turret_\r\nprefix",
    ],
)
def test_redteam_exfil_shape_spares_what_is_not_a_token(data: bytes) -> None:
    assert not _found(data)


def test_redteam_exfil_header_value_folded() -> None:
    headers = CIMultiDict({"X-Note": TOKEN[:20] + "\r\n " + TOKEN[20:]})
    where = find_secret((TokenGuard().redactor,), path="/x", query="", headers=headers, body=b"")
    assert where == "header X-Note"


ISSUE = "/v1/proxy/gitea/api/v1/repos/me/x/issues"


@pytest.mark.parametrize(
    "case", ["standard-alphabet", "split-by-pct-0a", "prefix-fullwidth-percent", "qp-soft-break"]
)
async def test_redteam_exfil_gateway_refuses_token_spellings(hardened: Hardened, case: str) -> None:
    data = FORMS[case](hardened.other_token)
    resp = await hardened.request("POST", ISSUE + "?n=" + quote(data.decode()), data=b"{}")
    assert resp.status == 403
    assert (await error_of(resp))["code"] == "credential_in_request"
    assert hardened.upstream.received == []


async def test_redteam_exfil_gateway_refuses_own_token_body(hardened: Hardened) -> None:
    body = hardened.token[len(TOKEN_PREFIX) :]
    resp = await hardened.request("POST", ISSUE, data=json.dumps({"body": body}).encode())
    assert resp.status == 403
    assert (await error_of(resp))["code"] == "credential_in_request"
    assert hardened.upstream.received == []


def test_redteam_exfil_standard_alphabet_token_cut_out_exactly() -> None:
    """The wider alphabet covers only the token's own 43 characters: `/b` after it stays."""
    text = "/a/" + _standard(TOKEN) + "/b"
    assert scrub_text(text, (TokenGuard().redactor,)) == "/a/[REDACTED]/b"


@pytest.mark.parametrize(
    "header",
    ["Cookie", "X-Forwarded-For", "X-Forwarded-Host", "Forwarded", "Via", "Referer", "Origin"],
)
async def test_redteam_exfil_gateway_token_in_hop_headers_never_reaches_upstream(
    hardened: Hardened, header: str
) -> None:
    """Refused, or the header dropped: either way the upstream never sees the token."""
    token = hardened.other_token
    value = f"a={token}" if header == "Cookie" else f"http://x/{_standard(token)}"
    resp = await hardened.request("GET", "/v1/proxy/gitea/api/v1/user", headers={header: value})
    assert resp.status in {200, 403}
    seen = "".join(f"{r.raw_path}{r.header_items}{r.body!r}" for r in hardened.upstream.received)
    assert token[len(TOKEN_PREFIX) :] not in seen
    assert _standard(token)[len(TOKEN_PREFIX) :] not in seen
