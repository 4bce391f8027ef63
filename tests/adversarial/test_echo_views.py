"""Echo guard, decode-then-scan: every representation a client would decode to the secret.

Attack: an upstream (or a page on it) reflects the injected credential in an escaping of a text
format, nested encodings, a wrapped base64 block, a UTF-16 body or a header in bytes that are not
UTF-8. Each is found (`found`), and `redact` either cuts it out in place or withholds the answer.
"""

from __future__ import annotations

import base64
import codecs
import html
import json
from collections.abc import AsyncIterator, Callable
from urllib.parse import quote, quote_plus

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from tests.adversarial.conftest import Hardened, MakeHardened, error_of
from turret.echo import MARKER, Redactor
from turret.errors import ResponseWithheld
from turret.views import max_views, views

SECRET = "CANARY_s3cr3t/+=&:vAlue.9"
PAIR = "CANARY-\U0001f600-astral"  # needs a surrogate pair in JSON
Enc = Callable[[str], bytes]


def _wrap(data: bytes, width: int, eol: bytes = b"\r\n") -> bytes:
    return eol.join(data[i : i + width] for i in range(0, len(data), width))


def _pct_all(s: str, fmt: str = "%{:02x}") -> str:
    return "".join(fmt.format(b) for b in s.encode())


def _json_u(s: str, fmt: str = "\\u{:04x}") -> str:
    """Every character escaped; with 4 hex digits, as UTF-16 code units (surrogate pairs)."""
    if "04" not in fmt:
        return "".join(fmt.format(ord(c)) for c in s)
    units = s.encode("utf-16-be")
    return "".join(fmt.format(int.from_bytes(units[i : i + 2])) for i in range(0, len(units), 2))


def _hex_mixed(s: str) -> bytes:
    h = s.encode().hex()
    return "".join(c.upper() if i % 3 else c for i, c in enumerate(h)).encode()


def _named(s: str) -> str:
    names = {"_": "&lowbar;", "/": "&sol;", "+": "&plus;", "=": "&equals;", "&": "&amp;"}
    names |= {":": "&colon;", ".": "&period;"}
    return "".join(names.get(c, c) for c in s)


ENCODERS: dict[str, Enc] = {
    "json-u-lower": lambda s: _json_u(s).encode(),
    "json-u-upper-hex": lambda s: _json_u(s, "\\u{:04X}").encode(),
    "json-go-style": lambda s: json.dumps(s)[1:-1].replace("&", "\\u0026").encode(),
    "json-escaped-solidus": lambda s: json.dumps(s)[1:-1].replace("/", "\\/").encode(),
    "json-one-char-escaped": lambda s: (s[:5] + "\\u0059" + s[6:]).encode(),
    "python-x-escapes": lambda s: "".join(f"\\x{b:02x}" for b in s.encode()).encode(),
    "python-octal": lambda s: "".join(f"\\{b:o}" for b in s.encode()).encode(),
    "js-u-brace": lambda s: _json_u(s, "\\u{{{:x}}}").encode(),
    "python-U8": lambda s: _json_u(s, "\\U{:08x}").encode(),
    "html-decimal": lambda s: "".join(f"&#{ord(c)};" for c in s).encode(),
    "html-hex-upper": lambda s: "".join(f"&#X{ord(c):X};" for c in s).encode(),
    "html-decimal-no-semicolon": lambda s: f"&#{ord(s[0])}{s[1:]}".encode(),
    "html-named-lowbar": lambda s: _named(s).encode(),
    "xml-escape-once": lambda s: html.escape(s).encode(),
    "pct-full-lower": lambda s: _pct_all(s).encode(),
    "pct-full-upper": lambda s: _pct_all(s, "%{:02X}").encode(),
    "pct-partial": lambda s: "".join(_pct_all(c) if i % 2 else c for i, c in enumerate(s)).encode(),
    "pct-double": lambda s: quote(quote(s, safe=""), safe="").encode(),
    "pct-triple": lambda s: quote(quote(quote(s, safe=""), safe=""), safe="").encode(),
    "pct-quadruple-full": lambda s: _pct_all(_pct_all(_pct_all(_pct_all(s)))).encode(),
    "pct-mixed-case-hex": lambda s: quote(s, safe="").replace("%2F", "%2f").encode(),
    "form-plus-double": lambda s: quote_plus(quote_plus(s)).encode(),
    "mime-base64-76": lambda s: _wrap(base64.b64encode(b"hi " + s.encode() + b" bye"), 76),
    "mime-base64-64": lambda s: _wrap(base64.b64encode(b"hi " + s.encode() + b" bye"), 64),
    "mime-base64-60-lf": lambda s: _wrap(base64.b64encode(b"x" + s.encode()), 60, b"\n"),
    "mime-base64-1": lambda s: _wrap(base64.b64encode(b"hi " + s.encode()), 1),
    "base64url-wrapped-7": lambda s: _wrap(base64.urlsafe_b64encode(b"ab" + s.encode()), 7),
    "utf16-le-bom": lambda s: ("note: " + s).encode("utf-16"),
    "utf16-le": lambda s: ("note: " + s).encode("utf-16-le"),
    "utf16-be": lambda s: ("note: " + s).encode("utf-16-be"),
    "utf16-be-bom": lambda s: codecs.BOM_UTF16_BE + ("n " + s).encode("utf-16-be"),
    "utf16-odd-offset": lambda s: b"x" + s.encode("utf-16-le"),
    "utf32-le-bom": lambda s: ("note: " + s).encode("utf-32"),
    "utf32-be": lambda s: ("note: " + s).encode("utf-32-be"),
    "hex-lower": lambda s: s.encode().hex().encode(),
    "hex-upper": lambda s: s.encode().hex().upper().encode(),
    "hex-mixed-case": _hex_mixed,
    "hex-spaced": lambda s: s.encode().hex(" ").encode(),
    "hex-wrapped": lambda s: _wrap(s.encode().hex().encode(), 16, b"\n"),
    # Compositions.
    "json-inside-pct": lambda s: quote(_json_u(s), safe="").encode(),
    "pct-inside-json": lambda s: _json_u(quote(s, safe="")).encode(),
    "html-inside-json": lambda s: json.dumps(_named(s)).encode(),
    "json-inside-html": lambda s: html.escape(_json_u(s)).encode(),
    "pct-of-html-entities": lambda s: quote("".join(f"&#{ord(c)};" for c in s)).encode(),
    "double-pct-of-json": lambda s: quote(quote(_json_u(s), safe=""), safe="").encode(),
    "utf16-json-escapes": lambda s: json.dumps({"k": _json_u(s)}).encode("utf-16"),
    "base64-of-utf16": lambda s: base64.b64encode(s.encode("utf-16-le")),
    "json-escaped-base64": lambda s: base64.b64encode(s.encode()).replace(b"/", b"\\/"),
}


@pytest.mark.parametrize("how", sorted(ENCODERS))
@pytest.mark.parametrize("secret", [SECRET, "CANARY-gitea-token-0123456789abcdef"])
def test_echo_views_find_every_representation(how: str, secret: str) -> None:
    data = b'{"before": 1, "x": "' + ENCODERS[how](secret) + b'", "after": 2}'
    redactor = Redactor([secret])
    assert redactor.found(data)
    try:
        clean, count = redactor.redact(data)
    except ResponseWithheld as exc:
        assert secret not in exc.message and secret not in exc.reason
        return
    assert count >= 1 and MARKER in clean
    assert not redactor.found(clean)


@pytest.mark.parametrize("how", ["json-u-lower", "html-decimal", "pct-full-upper", "js-u-brace"])
def test_echo_views_surrogate_pairs_and_astral_characters(how: str) -> None:
    data = ENCODERS[how](PAIR) if how != "json-u-lower" else json.dumps(PAIR).encode()
    assert Redactor([PAIR]).found(b"x " + data)


@pytest.mark.parametrize(
    "data",
    [
        b'{"hello": "world", "url": "/a?b=1&c=%2F", "esc": "line\\nnext \\u00e9"}',
        b"<p>Tom &amp; Jerry &#169; &lowbar; &#x41;</p>",
        "plain text in UTF-16".encode("utf-16"),
        base64.b64encode(bytes(range(256)) * 4),
        b"%25%25%25" * 100,
        b"\\\\\\" * 100 + b"\0\0",
        b"CANARY_s3cr3t/+=&:vAlue.",  # all but the last character
    ],
)
def test_echo_views_leave_ordinary_data_alone(data: bytes) -> None:
    redactor = Redactor([SECRET])
    assert not redactor.found(data)
    assert redactor.redact(data) == (data, 0)


def test_echo_views_redact_in_place_the_plain_forms_a_real_upstream_writes() -> None:
    """A PHP-style JSON echo (`\\/`), a URL-encoded redirect and HTML-escaped text are cut out
    in place, so the rest of the answer still reaches the agent."""
    forms = [
        SECRET.replace("/", "\\/").encode(),
        quote(SECRET, safe="").encode(),
        html.escape(SECRET).encode(),
        json.dumps(SECRET)[1:-1].replace("&", "\\u0026").encode(),
        SECRET.encode("utf-16-le"),
    ]
    data = b"|".join([b"keep", *forms, b"keep"])
    clean, count = Redactor([SECRET]).redact(data)
    assert count == len(forms)
    assert clean == b"|".join([b"keep", *[MARKER] * len(forms), b"keep"])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"Bearer {SECRET}", ("Bearer [REDACTED]", 1)),
        ("caf\u00e9 ok", ("caf\u00e9 ok", 0)),
        ("bytes \udcff that are not UTF-8", ("bytes \udcff that are not UTF-8", 0)),
        # Bytes that are not UTF-8 reach aiohttp as lone surrogates and are left out when it
        # writes the header: the agent would read the secret whole.
        (SECRET[:6] + "\udcff\udcfe" + SECRET[6:], ("[REDACTED]", 1)),
        (f"x={_json_u(SECRET)}", ("[REDACTED]", 1)),
        (f"x={quote(quote(SECRET, safe=''), safe='')}", ("[REDACTED]", 1)),
    ],
)
def test_echo_views_header_text_in_the_bytes_the_agent_sees(
    text: str, expected: tuple[str, int]
) -> None:
    assert Redactor([SECRET]).redact_text(text) == expected


def test_echo_views_withheld_message_quotes_nothing() -> None:
    data = b"secret in a view: " + _json_u(SECRET).encode()
    with pytest.raises(ResponseWithheld) as info:
        Redactor([SECRET]).redact(data)
    assert info.value.status == 502 and info.value.code == "response_withheld"
    assert "CANARY" not in str(info.value) and "\\u" not in info.value.reason


@pytest.mark.parametrize(
    "data",
    [
        b"%25" * 5000 + b"%41",
        (b"\\u0025" + b"25" * 10) * 500,
        b"&amp;" * 3000 + b"%26amp%3B" * 1000 + b"\\\\x26" * 1000,
        ("%" + "\0\\&" * 3000).encode("utf-16"),
        b"".join(ENCODERS[how](SECRET) for how in sorted(ENCODERS)),
    ],
)
def test_echo_views_count_is_bounded_whatever_the_input(data: bytes) -> None:
    """Linearity without timing: every view is one pass over the data, and their number has a
    constant bound, so a scan costs at most `max_views()` passes."""
    count = sum(1 for _ in views(data))
    assert count <= max_views() <= 210
    assert sum(1 for _ in views(data * 20)) <= max_views()


def test_echo_views_common_case_is_one_view() -> None:
    body = json.dumps({"items": [{"id": i, "name": f"item {i}"} for i in range(500)]}).encode()
    assert list(views(body)) == [body]


# --- through a gateway: a reflecting upstream never gets a secret to the agent -----------------


def _mirror_body(how: str, auth: str) -> bytes:
    return b"echo: " + ENCODERS[how](auth) + b" end"


async def _mirror(request: web.Request) -> web.StreamResponse:
    auth = request.headers.get("Authorization", "")
    how = request.match_info["how"]
    if how.startswith("header-"):
        value = ENCODERS[how.removeprefix("header-")](auth).decode("latin-1")
        return web.Response(text="ok", headers={"X-Echo": value})
    return web.Response(body=_mirror_body(how, auth), content_type="text/plain")


@pytest.fixture
async def mirror(make_hardened: MakeHardened) -> AsyncIterator[Hardened]:
    app = web.Application()
    app.router.add_get("/{how}", _mirror)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    url = str(server.make_url("")).rstrip("/")
    yield await make_hardened(
        services=f"  mirror:\n    url: {url}\n    auth: {{bearer: gitea-token}}\n",
        grants="      - service: mirror\n        methods: [GET]\n        paths: ['/*']\n",
    )
    await server.close()


GATEWAY_CASES = [
    "json-u-lower",
    "json-escaped-solidus",
    "html-named-lowbar",
    "pct-double",
    "pct-partial",
    "mime-base64-76",
    "utf16-le-bom",
    "hex-mixed-case",
    "json-inside-pct",
    "header-json-u-lower",
    "header-pct-double",
    "header-hex-mixed-case",
]


@pytest.mark.parametrize("how", GATEWAY_CASES)
async def test_echo_views_reflecting_upstream_never_reaches_the_agent(
    mirror: Hardened, canaries: dict[str, str], how: str
) -> None:
    resp = await mirror.request("GET", f"/v1/proxy/mirror/{how}")
    body = await resp.read()
    guard = Redactor(canaries.values())
    if resp.status == 502:
        assert (await error_of(resp))["code"] == "response_withheld"
    else:
        assert resp.status == 200
        assert MARKER in body or MARKER.decode() in resp.headers.get("X-Echo", "")
    head = "\n".join(f"{k}: {v}" for k, v in resp.headers.items())
    assert not guard.found(body) and not guard.found(head.encode())
