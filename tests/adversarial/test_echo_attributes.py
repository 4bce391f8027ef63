"""Echo and exfiltration guards: a secret written with character references INSIDE markup (an
attribute value, a tag's name, a comment), where the HTML reading removes the whole tag before
decoding references. The value of an attribute is what its reader sees, so each is found."""

from __future__ import annotations

import pytest

from turret.echo import MARKER, Redactor
from turret.errors import ResponseWithheld
from turret.exfil import TokenGuard, carries
from turret.scrub import Scrubber
from turret.views import max_views, views

SECRET = "CANARY-attr-s3cret-0123456789"


def _decimal(s: str) -> str:
    return "".join(f"&#{ord(c)};" for c in s)


def _hex(s: str) -> str:
    return "".join(f"&#x{ord(c):x};" for c in s)


def _half(s: str) -> str:
    return s[:8] + _decimal(s[8:])


PLACES = {
    "attribute-double-quoted": '<a title="{}">x</a>',
    "attribute-single-quoted": "<img alt='{}'>",
    "attribute-unquoted": "<input value={}>",
    "href": '<a href="https://example.org/?k={}">link</a>',
    "comment": "<!-- {} -->",
    "self-closing": '<meta content="{}"/>',
    "xml-attribute": '<?xml version="1.0"?><cfg key="{}"/>',
    "nested-in-text-and-tag": '<p>{}<span data-x="{}"></span></p>',
}
ENCODINGS = {"decimal": _decimal, "hex": _hex, "half-decimal": _half}


@pytest.mark.parametrize("encoding", sorted(ENCODINGS))
@pytest.mark.parametrize("place", sorted(PLACES))
def test_echo_attributes_encoded_secret_inside_markup_is_found(place: str, encoding: str) -> None:
    encoded = ENCODINGS[encoding](SECRET)
    data = PLACES[place].format(encoded, encoded).encode()
    redactor = Redactor([SECRET])
    assert redactor.found(data), data
    try:
        clean, _ = redactor.redact(data)
    except ResponseWithheld as exc:
        assert SECRET not in exc.message
        return
    assert MARKER in clean and not redactor.found(clean)


def test_echo_attributes_markup_without_a_secret_is_left_alone() -> None:
    data = b'<a title="caf&eacute; &amp; cr&egrave;me">menu</a>'
    assert not Redactor([SECRET]).found(data)
    assert Redactor([SECRET]).redact(data) == (data, 0)


def test_echo_attributes_view_count_stays_bounded() -> None:
    data = ('<a title="' + _decimal(SECRET) + '">').encode() * 50
    assert sum(1 for _ in views(data)) <= max_views()


@pytest.mark.parametrize("place", sorted(PLACES))
def test_echo_attributes_agent_sending_one_is_caught_by_the_exfiltration_guard(place: str) -> None:
    data = PLACES[place].format(_decimal(SECRET), _decimal(SECRET)).encode()
    assert carries(b"note=" + data, (Redactor([SECRET]),))


def test_echo_attributes_scrubber_sees_a_secret_between_markup_split_over_two_parts() -> None:
    # `<` in the request line and `>` in the body: joined, they would read as one tag.
    scrubber = Scrubber(Redactor([SECRET]), TokenGuard(), b"GET /x?a=< HTTP/1.1")
    scrubber.look_at(_decimal(SECRET).encode() + b">")
    assert scrubber.needed()
    assert SECRET not in scrubber(f"body: {_decimal(SECRET)}>")
