"""Starting and stopping the audit chain on the state store (`audit: {chain_key: CREDENTIAL}`).

At start the chain continues from the head in the state store with a `chain_resumed` record
linking to it (or begins with `chain_started`); the head is persisted before the first record
and then every `PERSIST_EVERY` records (an fsynced SQLite write each, so not one per record),
and exactly at a clean stop, which is marked so the next start continues at the next seq.
After a crash the next start skips `PERSIST_EVERY` seqs past the stored head: the records
written since it (at most `PERSIST_EVERY - 1`) lie in that window, which verify accepts.
A persist that fails stops the record and the action it describes (`AuditUnavailable`).
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable

from turret.audit import Auditor
from turret.auditchain import GENESIS, ChainWriter, Head, resume_seq
from turret.errors import AuditUnavailable, StateError
from turret.records import NOTICE, WARNING, Event
from turret.state import StateStore

log = logging.getLogger("turret")
PERSIST_EVERY = 32
CLEAN = "audit_chain_clean"  # meta: the seq of the head persisted at a clean stop


def start_chain(
    auditor: Auditor, key: bytes | None, state: StateStore | None,
    every: int = PERSIST_EVERY, clock: Callable[[], float] = time.time,
) -> None:
    """Number and link every record `auditor` writes from now on, and write the first one;
    nothing when no chain key is configured. Refuses (StateError) without a state store."""
    if key is None:
        return
    if state is None:
        raise StateError(
            "audit.chain_key needs the state store (StateDirectory=turret or --state-dir): "
            "the chain continues across restarts from the head kept there"
        )
    try:
        stored = state.audit_chain.head()
        clean = stored is not None and state.meta.get(CLEAN) == str(stored.seq)
        state.meta.delete(CLEAN)
    except sqlite3.Error as exc:
        message = f"the audit chain head cannot be read from the state store: {exc}"
        raise StateError(message) from exc
    link_to = Head(stored.seq, stored.chain) if stored is not None else Head(0, GENESIS)
    first = resume_seq(link_to if stored is not None else None, clean, every)
    auditor.chain = ChainWriter(key, first, link_to, _persister(state, clock), every)
    if stored is None:
        auditor.record(Event.CHAIN_STARTED, "audit chain started", {})
        return
    how = "after a clean stop" if clean else f"after an unclean stop (up to {every - 1} records)"
    auditor.record(
        Event.CHAIN_RESUMED,
        f"audit chain resumed from seq {stored.seq} {how}",
        {"TURRET_CHAIN_CLEAN": "yes" if clean else "no"},
        priority=NOTICE if clean else WARNING,
    )


def stop_chain(auditor: Auditor, state: StateStore | None, at: float | None = None) -> None:
    """Persist the exact head and mark the stop clean; later records are not chained."""
    chain, auditor.chain = auditor.chain, None
    if chain is None or state is None:
        return
    try:
        head = chain.flush()
        if head is not None:
            state.meta.set(CLEAN, str(head.seq), time.time() if at is None else at)
    except (AuditUnavailable, sqlite3.Error):
        # Unmarked, the next start resumes past the crash window: no seq is used twice.
        log.exception("audit chain head not recorded at stop")


def _persister(state: StateStore, clock: Callable[[], float]) -> Callable[[Head], None]:
    def persist(head: Head) -> None:
        try:
            state.audit_chain.advance(head.seq, head.chain, clock())
        except (sqlite3.Error, ValueError, OSError) as exc:
            raise AuditUnavailable(f"the audit chain head cannot be recorded: {exc}") from exc

    return persist
