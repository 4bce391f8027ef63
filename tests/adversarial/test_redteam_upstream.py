"""Red team, hostile upstream: places in an answer beyond body and header values.

A raw upstream answers with the injected credential in the status line's reason phrase, a
header name, a redirect's userinfo with mixed percent-encoding, a header value in a form only
a decoding view shows (quoted-printable, CDATA, fullwidth), a chunked trailer, a `Vary` or
`Allow` list, and a body in a view the first issue-10 round did not make. Whatever the agent
receives, no decoded view of it holds the credential.
"""

from __future__ import annotations

import quopri
import re
import unicodedata
from collections.abc import AsyncIterator, Callable, Iterator
from urllib.parse import quote, unquote

import pytest

from tests.adversarial.conftest import Hardened, MakeHardened
from tests.adversarial.test_desync import ScriptServer, answer, start_script
from turret.echo import Redactor

_MARKUP = re.compile(r"<!\[CDATA\[|\]\]>|<[^<>]*>")


def readings(data: bytes) -> Iterator[str]:
    """How a reader decodes what it got, independently of the guard under test: percent-
    decoded, quoted-printable, markup and invisible format characters removed, NFKC."""
    text = data.decode("utf-8", "replace")
    for _ in range(3):
        yield text
        text = unquote(text)
        yield text
        text = quopri.decodestring(text.encode()).decode("utf-8", "replace")
        yield text
        text = _MARKUP.sub("", text)
        text = "".join(c for c in text if unicodedata.category(c) != "Cf")
        text = unicodedata.normalize("NFKC", text)


def _fullwidth(s: str) -> str:
    return "".join(chr(ord(c) + 0xFEE0) if 0x21 <= ord(c) <= 0x7E else c for c in s)


def _mixed_pct(s: str) -> str:
    return "".join(f"%{ord(c):02x}" if i % 3 == 0 else c for i, c in enumerate(s))


def _qp(s: str) -> str:
    return "".join(f"={b:02X}" for b in s.encode())


Answer = Callable[[str], bytes]
ANSWERS: dict[str, Answer] = {
    "reason-phrase": lambda s: answer(b"ok", status=b"200 " + s.encode()),
    "reason-phrase-pct": lambda s: answer(b"ok", status=b"200 " + quote(s).encode()),
    "header-name": lambda s: answer(b"ok", b"X-" + s.encode() + b": 1"),
    "header-name-pct": lambda s: answer(b"ok", b"X-" + _mixed_pct(s).encode() + b": 1"),
    "location-userinfo-mixed-pct": lambda s: answer(
        b"", b"Location: http://user:" + _mixed_pct(s).encode() + b"@example.org/", status=b"302 x"
    ),
    "location-userinfo-double-pct": lambda s: answer(
        b"",
        b"Location: http://u:" + quote(quote(s, safe=""), safe="").encode() + b"@h/",
        status=b"302 x",
    ),
    "header-qp": lambda s: answer(b"ok", b"X-Note: " + _qp(s).encode()),
    "header-mime-encoded-word": lambda s: answer(
        b"ok", b"X-Note: =?utf-8?q?" + _qp(s).encode() + b"?="
    ),
    "header-cdata": lambda s: answer(
        b"ok", b"X-Note: <![CDATA[" + s[:9].encode() + b"]]><![CDATA[" + s[9:].encode() + b"]]>"
    ),
    "header-fullwidth-utf8": lambda s: answer(b"ok", b"X-Note: " + _fullwidth(s).encode()),
    "header-vary-list": lambda s: answer(b"ok", b"Vary: Accept, " + s.encode()),
    "header-allow-list": lambda s: answer(b"ok", b"Allow: GET, " + s.encode()),
    "header-www-authenticate": lambda s: answer(
        b"ok", b'WWW-Authenticate: Bearer error="' + s.encode() + b'"', status=b"401 x"
    ),
    "header-content-type-param": lambda s: answer(
        b"ok", b"Content-Type: text/plain; x=" + quote(s).encode()
    ),
    "chunked-trailer": lambda s: (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n"
        b"Trailer: X-T\r\n\r\n2\r\nok\r\n0\r\nX-T: " + s.encode() + b"\r\n\r\n"
    ),
    "body-qp-soft-breaks": lambda s: answer(
        b"Content-Transfer-Encoding: quoted-printable\r\n\r\n"
        + s[:10].encode()
        + b"=\r\n"
        + s[10:].encode()
    ),
    "body-html-comment-split": lambda s: answer(
        b"<p>" + s[:10].encode() + b"<!-- -->" + s[10:].encode() + b"</p>",
        b"Content-Type: text/html",
    ),
    "body-zero-width-split": lambda s: answer((s[:10] + "\u200b" + s[10:]).encode()),
    "body-fullwidth": lambda s: answer(_fullwidth(s).encode()),
    "gzip-on-204": lambda s: answer(b"", b"Content-Encoding: gzip", status=b"204 No Content"),
}


@pytest.fixture
async def hostile(
    make_hardened: MakeHardened, canaries: dict[str, str]
) -> AsyncIterator[tuple[Hardened, ScriptServer]]:
    secret = canaries["gitea-token"]
    server = ScriptServer({f"/{name}": make(secret) for name, make in ANSWERS.items()})
    gw = await start_script(make_hardened, server)
    yield gw, server
    await server.close()


@pytest.mark.parametrize("case", sorted(ANSWERS))
async def test_redteam_upstream_answer_never_carries_the_credential(
    hostile: tuple[Hardened, ScriptServer], canaries: dict[str, str], case: str
) -> None:
    gw, _ = hostile
    resp = await gw.request("GET", f"/v1/proxy/raw/{case}")
    body = await resp.read()
    guard = Redactor(canaries.values())
    head = f"{resp.status} {resp.reason}\n" + "\n".join(
        f"{k.decode('latin-1')}: {v.decode('latin-1')}" for k, v in resp.raw_headers
    )
    secret = canaries["gitea-token"]
    for data in (body, head.encode("utf-8", "surrogateescape")):
        assert not guard.found(data)
        assert not any(secret in reading for reading in readings(data)), (head, body)
    assert resp.status in {200, 204, 302, 401, 502}
