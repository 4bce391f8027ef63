"""A minting provider's response guard over the upstream's headers: each header is looked at in
every view on its own, so no view of the headers together can hide an encoded value."""

from __future__ import annotations

from multidict import CIMultiDict

from turret.echo import Redactor
from turret.model import UpstreamResponse
from turret.upstream import _redacted

MINTED = "ghs_minted0123456789abcdefXYZ"
ENTITIES = "".join(f"&#{ord(c)};" for c in MINTED)


async def test_an_entity_encoded_value_between_markup_in_other_headers_is_redacted() -> None:
    headers = CIMultiDict([("X-A", "<"), ("X-B", ENTITIES), ("X-C", ">")])
    guarded = await _redacted(UpstreamResponse(200, headers, b"", 0), Redactor([MINTED]))
    assert guarded.headers["X-B"] != ENTITIES
    assert (guarded.headers["X-A"], guarded.headers["X-C"]) == ("<", ">")
    assert guarded.redactions == 1


async def test_headers_without_a_value_are_kept_as_they_are() -> None:
    headers = CIMultiDict([("X-A", "<"), ("Link", "<https://x/?page=2>; rel=next")])
    guarded = await _redacted(UpstreamResponse(200, headers, b"{}", 0), Redactor([MINTED]))
    assert guarded.headers == headers and guarded.redactions == 0
