"""Starting and stopping the chain on a real state store (`turret.auditseal`), `audit.chain_key`
in the config, and the fail-closed path: a head that cannot be recorded stops the record."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.audit.conftest import KEY, ListSink, Trail
from tests.gateway import Canaries
from turret.audit import Auditor
from turret.auditchain import SEQ, verify
from turret.auditseal import CLEAN, start_chain, stop_chain
from turret.config import read_config
from turret.errors import AuditUnavailable, ConfigError, CredentialError, StateError
from turret.providers.build import build_runtime
from turret.records import Event
from turret.state import StateStore

CONFIG = """
services:
  gitea: {url: "http://127.0.0.1:1", auth: {bearer: gitea-token}}
agents:
  a: {token_sha256: "%s", proxy: [{service: gitea, methods: [GET], paths: ["/x"]}]}
""" % ("0" * 64)


def test_seal_without_a_chain_key_chains_nothing(trail: Trail) -> None:
    sink = ListSink()
    auditor = Auditor(sink)
    start_chain(auditor, None, None)
    auditor.record(Event.DECISION, "a: allow", {"TURRET_AGENT": "a"})
    assert auditor.chain is None and SEQ not in sink.records[0]


def test_seal_a_chain_key_without_a_state_store_refuses_to_start() -> None:
    with pytest.raises(StateError, match=r"audit\.chain_key needs the state store"):
        start_chain(Auditor(ListSink()), KEY, None)


def test_seal_head_is_persisted_before_the_first_record_and_every_n(trail: Trail) -> None:
    trail.every = 4
    store = StateStore.open(trail.state_dir)
    auditor = Auditor(trail.sink)
    start_chain(auditor, KEY, store, every=4)
    heads = []
    for _ in range(9):
        head = store.audit_chain.head()
        heads.append(None if head is None else head.seq)
        auditor.record(Event.DECISION, "a: allow", {"TURRET_AGENT": "a"})
    assert heads == [1, 1, 1, 1, 5, 5, 5, 5, 9]  # before each of seq 2..10
    stop_chain(auditor, store)
    assert store.audit_chain.head() is not None and store.meta.get(CLEAN) == "10"
    assert store.audit_chain.head().seq == 10  # type: ignore[union-attr]
    store.close()


def test_seal_a_head_that_cannot_be_recorded_stops_the_record(trail: Trail) -> None:
    store = StateStore.open(trail.state_dir)
    auditor = Auditor(trail.sink)
    start_chain(auditor, KEY, store, every=4)
    store.close()  # the state store is gone from under the running chain
    for _ in range(3):  # seq 2..4: inside the window, not persisted one by one
        auditor.record(Event.DECISION, "a: allow", {"TURRET_AGENT": "a"})
    with pytest.raises(AuditUnavailable, match="head cannot be recorded"):
        auditor.record(Event.DECISION, "a: deny", {"TURRET_AGENT": "a"})
    assert [r[SEQ] for r in trail.records] == ["1", "2", "3", "4"]  # seq 5 never written


def test_seal_a_head_refused_at_start_refuses_the_start(trail: Trail) -> None:
    store = StateStore.open(trail.state_dir)
    store.close()
    with pytest.raises(StateError, match="audit chain head"):
        start_chain(Auditor(trail.sink), KEY, store)
    assert trail.records == []


def test_seal_a_record_the_sink_loses_shows_as_missing(trail: Trail) -> None:
    class Flaky(ListSink):
        fail = False

        def write(self, message: str, fields: dict[str, str]) -> None:
            if self.fail:
                raise OSError("disk full")
            super().write(message, fields)

    sink = Flaky()
    store = StateStore.open(trail.state_dir)
    auditor = Auditor(sink)
    start_chain(auditor, KEY, store, every=4)
    sink.fail = True
    with pytest.raises(AuditUnavailable):
        auditor.record(Event.DECISION, "a: allow", {"TURRET_AGENT": "a"})
    sink.fail = False
    auditor.record(Event.DECISION, "a: allow", {"TURRET_AGENT": "a"})
    stop_chain(auditor, store)
    store.close()
    verdict = verify(KEY, sink.records)
    assert verdict.problem is not None and "seq 2 missing" in verdict.problem.detail


def test_seal_records_after_the_stop_are_not_chained(trail: Trail) -> None:
    store = StateStore.open(trail.state_dir)
    auditor = Auditor(trail.sink)
    start_chain(auditor, KEY, store)
    stop_chain(auditor, store)
    auditor.record(Event.CONFIG_ERROR, "refusing to start", {})
    store.close()
    assert SEQ not in trail.records[-1]
    trail.run(1)
    verdict = verify(KEY, trail.records)
    assert verdict.problem is None and verdict.unchained == 1


def test_seal_head_the_admin_socket_shows_is_the_last_record(trail: Trail) -> None:
    auditor = trail.run(3, clean=False)
    assert auditor.chain is not None and auditor.chain.head is not None
    last = trail.records[-1]
    assert str(auditor.chain.head) == f"{last[SEQ]}:{last['TURRET_CHAIN']}"


def test_seal_chain_key_read_from_the_config_and_loaded_as_a_credential(
    tmp_path: Path, canary_set: Canaries
) -> None:
    path = tmp_path / "turret.yaml"
    path.write_text(CONFIG + "audit: {chain_key: chain-key, params_key: params-key}\n")
    config = read_config(path)
    assert config.chain_key == "chain-key"
    runtime = build_runtime(config, str(canary_set.write(tmp_path / "creds")))
    assert runtime.chain_key == canary_set.credentials["chain-key"].encode()
    (tmp_path / "creds" / "chain-key").unlink()
    with pytest.raises(CredentialError, match="chain-key"):
        build_runtime(config, str(tmp_path / "creds"))


@pytest.mark.parametrize(
    ("audit", "message"),
    [
        ("{chain_key: 7}", "audit.chain_key"),
        ("{chain_key: ''}", "audit.chain_key"),
        ("{chain_key: '../etc/x'}", "audit.chain_key"),
        ("{chain_key: k, params_key: k}", "another credential than audit.params_key"),
        ("{chain_key: k, chain: x}", "chain"),
    ],
)
def test_seal_bad_chain_key_refused_with_its_key_path(
    tmp_path: Path, audit: str, message: str
) -> None:
    path = tmp_path / "turret.yaml"
    path.write_text(CONFIG + f"audit: {audit}\n")
    with pytest.raises(ConfigError) as exc:
        read_config(path)
    assert message in str(exc.value)
