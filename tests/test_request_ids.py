"""Request ids: unique, and drawn from the OS's CSPRNG, so no agent can predict another's."""

from __future__ import annotations

import random

from tests.conftest import Gateway
from turret.requestids import BATCH_BYTES, ID_BYTES, RequestIds


def test_request_ids_are_unique_16_hex_digits_across_batches() -> None:
    ids = RequestIds()
    drawn = [ids.next() for _ in range(5 * BATCH_BYTES // ID_BYTES + 3)]
    assert len(set(drawn)) == len(drawn)
    assert all(len(i) == 16 and int(i, 16) >= 0 for i in drawn)


async def test_request_ids_do_not_follow_the_seeded_prng(gateway: Gateway) -> None:
    """Attack: an agent that learns (or sets) the state of Python's `random` would predict the
    ids of every other agent's requests. Reseeding it must not repeat an id."""
    seen = []
    for _ in range(3):
        random.seed(1234)
        resp = await gateway.request("GET", "/v1/whoami")
        seen.append(resp.headers["X-Request-Id"])
    assert len(set(seen)) == len(seen)


async def test_request_ids_are_unique_over_many_requests(gateway: Gateway) -> None:
    ids = set()
    for _ in range(90):  # within the agent's burst
        resp = await gateway.request("GET", "/v1/whoami")
        ids.add(resp.headers["X-Request-Id"])
        assert (await resp.json())["ok"] is True
    assert len(ids) == 90
    records = gateway.audit()
    assert {r["TURRET_REQUEST_ID"] for r in records} == ids
