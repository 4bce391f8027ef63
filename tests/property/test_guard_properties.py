"""Property-based tests of the guards: any view-encoding of any secret, in any surrounding text,
is found; `redact` never returns data in which a view still shows the secret."""

from __future__ import annotations

import contextlib

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.adversarial.test_echo_views import ENCODERS
from turret.auth import new_token
from turret.echo import Redactor
from turret.errors import ResponseWithheld
from turret.exfil import TokenGuard

FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Secrets as configured: printable, high entropy, at least 12 characters (a shorter value is no
# credential and would match unrelated text).
SECRETS = st.text(
    st.characters(codec="utf-8", categories=["L", "N", "P", "S"]), min_size=12, max_size=40
)
# Surroundings an upstream or agent controls, escapes and encoding metacharacters included.
AROUND = st.binary(max_size=64) | st.text(max_size=64).map(lambda t: t.encode())
# Encodings that do not depend on the secret's characters (one-character escapes do).
GENERIC = sorted(set(ENCODERS) - {"json-one-char-escaped", "html-decimal-no-semicolon"})


@FAST
@given(SECRETS, AROUND, AROUND, st.sampled_from(GENERIC))
# Found by hypothesis: HTML-escaped, with a trailing backslash that string unescaping ate.
@example(secret="0000000000:\\", before=b"", after=b"", how="html-named-lowbar")
def test_guard_property_any_view_encoding_is_found(
    secret: str, before: bytes, after: bytes, how: str
) -> None:
    # A separator keeps the surroundings from forming an escape with the encoded secret (as
    # `&#6` + `7;` would), which changes what a client decodes.
    data = before + b"\n " + ENCODERS[how](secret) + b" \n" + after
    assert Redactor([secret]).found(data)


@FAST
@given(SECRETS, st.binary(max_size=200))
def test_guard_property_redact_leaves_no_view_holding_the_secret(secret: str, data: bytes) -> None:
    redactor = Redactor([secret])
    blob = data[: len(data) // 2] + secret.encode() + data[len(data) // 2 :]
    with contextlib.suppress(ResponseWithheld):
        clean, count = redactor.redact(blob)
        assert count >= 1 and not redactor.found(clean)


@FAST
@given(AROUND, AROUND, st.sampled_from(GENERIC))
def test_guard_property_token_shape_found_in_any_view(
    before: bytes, after: bytes, how: str
) -> None:
    data = before + b"\n " + ENCODERS[how](new_token()) + b" \n" + after
    assert TokenGuard().redactor.found(data)
