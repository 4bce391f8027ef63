"""Red team, audit trail: the spellings the views now decode, in every recorded place.

The issue-10 audit-hygiene requests (path, query, service name, unknown endpoint, capability
name, explain) are sent with the credential or a token fullwidth, quoted-printable, split by a
zero-width character, by markup or by a line break; every record field is then read the way a
person or a tool reading the journal could (`readings`: percent-decoded, quoted-printable,
markup and invisible characters removed, NFKC) and must not give the secret away.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.adversarial.conftest import Hardened
from tests.adversarial.test_audit_hygiene import _hardened_requests
from tests.adversarial.test_redteam_oracle import NEW_FORMS
from tests.adversarial.test_redteam_upstream import readings
from turret.auth import new_token


def _assert_unreadable(records: list[dict[str, Any]], secrets: list[str]) -> None:
    for record in records:
        for key, value in record.items():
            for reading in readings(str(value).encode()):
                for secret in secrets:
                    assert secret not in reading, f"{key} gives a secret away: {value!r}"


@pytest.mark.parametrize("form", list(NEW_FORMS))
@pytest.mark.parametrize("secret", ["credential", "other-agents-token", "never-presented-token"])
async def test_redteam_audit_records_hold_no_secret_in_new_spellings(
    hardened: Hardened, secret: str, form: str
) -> None:
    await hardened.request("GET", "/v1/whoami", headers=hardened.auth(hardened.other_token))
    fresh = new_token()
    value = {
        "credential": hardened.canaries["gitea-token"],
        "other-agents-token": hardened.other_token,
        "never-presented-token": fresh,
    }[secret]
    for method, target, kwargs in _hardened_requests(NEW_FORMS[form](value)):
        resp = await hardened.request(method, target, **kwargs)
        assert resp.status in {200, 400, 401, 403, 404, 405, 422}, (target, await resp.text())
    secrets = [*hardened.canaries.values(), hardened.token, hardened.other_token, fresh]
    _assert_unreadable(hardened.audit(), secrets)
