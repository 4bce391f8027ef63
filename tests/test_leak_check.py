"""The leak check itself can fail: it finds every watched secret wherever it is told to look."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from tests.conftest import Upstream, make_gateway
from tests.gateway import Built, Canaries

CANARY = "CANARY-leak-check-0123456789"


def _built(tmp_path: Path, where: str, leaked: bytes, creds: Canaries) -> Built:
    """A gateway value (never served) whose audit, log or responses hold `leaked`."""
    audit = tmp_path / "audit.jsonl"
    audit.write_bytes(leaked if where == "audit" else b"{}")
    responses = [leaked] if where == "response" else [b"clean"]
    return Built(None, audit, responses, creds)  # type: ignore[arg-type]  # not served


@pytest.mark.parametrize("where", ["audit", "log", "response", "extra text"])
def test_leak_check_finds_an_encoded_canary(tmp_path: Path, where: str) -> None:
    creds = Canaries({"canary": CANARY})
    leaked = b"prefix " + base64.b64encode(CANARY.encode()) + b" suffix"
    built = _built(tmp_path, where, leaked, creds)
    log = leaked.decode() if where == "log" else ""
    extra = [leaked.decode()] if where == "extra text" else []
    with pytest.raises(AssertionError, match=f"secret leaked into {where}"):
        built.assert_no_leaks(log, *extra)


@pytest.mark.parametrize("where", ["audit", "log", "response"])
def test_leak_check_finds_a_minted_agent_token(tmp_path: Path, where: str) -> None:
    creds = Canaries({"canary": CANARY})
    token = creds.mint()
    built = _built(tmp_path, where, f"Bearer {token}".encode(), creds)
    log = f"auth {token}" if where == "log" else ""
    with pytest.raises(AssertionError, match=f"secret leaked into {where}"):
        built.assert_no_leaks(log)


def test_leak_check_finds_a_value_issued_after_it_was_watched(tmp_path: Path) -> None:
    creds = Canaries({"canary": CANARY})
    issued: list[str] = []
    creds.watch(issued)
    issued.append("session-cookie-4f1d2a")  # a fake hands out a session after the build
    built = _built(tmp_path, "response", b"Set-Cookie: SID=session-cookie-4f1d2a", creds)
    with pytest.raises(AssertionError, match="secret leaked into response"):
        built.assert_no_leaks("")


def test_leak_check_passes_clean_places(tmp_path: Path) -> None:
    creds = Canaries({"canary": CANARY})
    creds.mint()
    Built(None, tmp_path / "none.jsonl", [b"clean"], creds).assert_no_leaks(  # type: ignore[arg-type]
        "clean log", "clean text"
    )


def test_leak_check_forgets_the_previous_tests_tokens() -> None:
    creds = Canaries({"canary": CANARY})
    token = creds.mint()
    creds.watch(["issued"])
    creds.begin_test()
    assert creds.values() == [CANARY] and token not in creds.values()


async def test_leak_check_catches_an_agent_token_in_a_real_response(
    upstream: Upstream, canary_set: Canaries, tmp_path: Path
) -> None:
    """A built gateway is registered: the end-of-test check closes it and finds the agent token
    its recorded responses hold."""
    canary_set.begin_test()
    gw = await make_gateway(upstream, creds=canary_set, tmp_path=tmp_path)
    resp = await gw.client.get("/v1/whoami", headers=gw.auth())
    assert resp.status == 200
    # What a leaking Turret would have sent: the agent's token, reflected in a response.
    gw.responses.append(f"X-Echo: {gw.token}".encode())
    with pytest.raises(AssertionError, match="secret leaked into response"):
        await canary_set.close_and_check("")
