"""The tamper-evident audit chain: the canonical form of a record, its HMAC link, numbering
records as they are written, and verifying a sequence of records.

Every chained record carries `TURRET_SEQ` (1, 2, 3, ... across restarts) and `TURRET_CHAIN`:

    TURRET_CHAIN = hex(HMAC-SHA256(key, bytes.fromhex(previous TURRET_CHAIN) || canonical(record)))

`canonical(record)` is the UTF-8 JSON object of the covered fields with sorted keys, separators
`,` and `:` and no ASCII escaping (`json.dumps(..., sort_keys=True, separators=(",", ":"),
ensure_ascii=False)`). Covered: `MESSAGE`, `MESSAGE_ID`, `PRIORITY` and every `TURRET_*` field
except `TURRET_CHAIN` itself; not covered: what journald or the file sink add (`__CURSOR`,
timestamps, `_PID`, `_SYSTEMD_UNIT`, `SYSLOG_IDENTIFIER`, `CODE_*`, the file's `ts`).

The first record of a run links to the head before it: `TURRET_CHAIN_PREV_SEQ` and
`TURRET_CHAIN_PREV` (seq 0 and 32 zero bytes for the very first record, `chain_started`;
the state store's head for `chain_resumed`), and its chain is computed from that link.
A run that stopped cleanly resumes at the next seq; after a crash the head in the store may be
up to `every - 1` records behind, so the run resumes `every` past it, and verify accepts the
records of that window between the link and the resumed record.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

SEQ, CHAIN = "TURRET_SEQ", "TURRET_CHAIN"
PREV_SEQ, PREV = "TURRET_CHAIN_PREV_SEQ", "TURRET_CHAIN_PREV"
GENESIS = "00" * 32
COVERED = frozenset({"MESSAGE", "MESSAGE_ID", "PRIORITY"})
MAX_EVERY = 1024  # the widest crash window verify has to look back over
Record = Mapping[str, object]
_DIGITS = re.compile(r"[0-9]{1,19}")


@dataclass(frozen=True)
class Head:
    """A point of the chain: a record's seq and its chain value (hex)."""

    seq: int
    chain: str

    def __str__(self) -> str:
        return f"{self.seq}:{self.chain}"


def parse_head(text: str) -> Head:
    """`SEQ:CHAIN` as `turret audit head` prints it; ValueError if it is not one."""
    seq, sep, chain = text.strip().partition(":")
    if not sep or not seq.isdigit() or len(chain) != 64 or not _is_hex(chain):
        raise ValueError("a head is SEQ:CHAIN, as `turret audit head` prints it")
    return Head(int(seq), chain.lower())


def covered(record: Record) -> dict[str, object]:
    """The fields of `record` the chain covers."""
    return {
        k: v
        for k, v in record.items()
        if k in COVERED or (k.startswith("TURRET_") and k != CHAIN)
    }


def canonical(record: Record) -> bytes:
    """The exact bytes the chain value of `record` is computed over."""
    text = json.dumps(covered(record), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return text.encode("utf-8")


def link(key: bytes, prev: str, record: Record) -> str:
    """The chain value of `record` following the chain value `prev`."""
    return hmac.new(key, bytes.fromhex(prev) + canonical(record), hashlib.sha256).hexdigest()


def resume_seq(stored: Head | None, clean: bool, every: int) -> int:
    """The seq the run starting now writes its first record at."""
    if stored is None:
        return 1
    return stored.seq + (1 if clean else every)


class ChainWriter:
    """Numbers and links records as they are written, in one order (a lock: records may come
    from more than one thread). The head is persisted (`persist`, which raises to refuse) before
    the record that reaches it is written: at the first record and then every `every` records,
    so a record beyond the persisted head + `every` - 1 is never written."""

    def __init__(
        self, key: bytes, first_seq: int, link_to: Head, persist: Callable[[Head], None],
        every: int,
    ) -> None:
        self._key = key
        self._next = first_seq
        self._prev = link_to.chain
        self._link: Head | None = link_to
        self._persist = persist
        self._every = every
        self._persisted = -every  # so the first record is persisted before it is written
        self._lock = threading.Lock()

    @property
    def head(self) -> Head | None:
        """The last record numbered, or None before the first."""
        with self._lock:
            return None if self._link is not None else Head(self._next - 1, self._prev)

    def write(
        self, message: str, fields: dict[str, str], sink: Callable[[str, dict[str, str]], None]
    ) -> None:
        """Add the chain fields to `fields` and hand the record to `sink`. A refused `persist`
        propagates and nothing is written; a record the sink loses shows as missing in verify."""
        with self._lock:
            seq = self._next
            fields[SEQ] = str(seq)
            if self._link is not None:
                fields[PREV_SEQ], fields[PREV] = str(self._link.seq), self._link.chain
            chain = link(self._key, self._prev, {"MESSAGE": message, **fields})
            if seq >= self._persisted + self._every:
                self._persist(Head(seq, chain))
                self._persisted = seq
            fields[CHAIN] = chain
            self._next, self._prev, self._link = seq + 1, chain, None
            sink(message, fields)

    def flush(self) -> Head | None:
        """Persist the exact head (at a clean stop); the head, or None if nothing was written."""
        with self._lock:
            if self._link is not None:
                return None
            head = Head(self._next - 1, self._prev)
            if head.seq > self._persisted:
                self._persist(head)
                self._persisted = head.seq
            return head


@dataclass(frozen=True)
class Problem:
    """The first place the records do not verify: the record's position in the input (1-based;
    0 for the end of the input), its seq if it has one, what is wrong."""

    index: int
    seq: int | None
    detail: str


@dataclass
class Verdict:
    """What `verify` found: how many chained records verified, how many carried no chain,
    the first and last heads seen, crash windows crossed, and the first problem (or None)."""

    checked: int = 0
    unchained: int = 0
    first: Head | None = None
    last: Head | None = None
    windows: int = 0
    problem: Problem | None = None


def verify(
    key: bytes, records: Iterable[Record], *, anchored: bool = False, head: Head | None = None
) -> Verdict:
    """Recompute the chain over `records` (in the order written) and stop at the first problem.

    Without `anchored` the records must start at the very first one (seq 1, `chain_started`):
    a first record deleted is found. With it (a `--since` window) the first chained record is
    taken as given and the chain is checked from it on. `head`, a head published earlier, must
    be among the records with that chain value: a deleted tail is found only this way.
    """
    verdict = Verdict()
    recent: OrderedDict[int, str] = OrderedDict()
    at_head: str | None = None
    for index, record in enumerate(records, 1):
        if SEQ not in record:
            verdict.unchained += 1
            continue
        problem = _check(key, record, verdict, recent, anchored)
        if problem is not None:
            verdict.problem = Problem(index, _int(record.get(SEQ)), problem)
            return verdict
        if head is not None and verdict.last is not None and verdict.last.seq == head.seq:
            at_head = verdict.last.chain
    if head is not None:
        verdict.problem = _check_head(head, verdict, at_head)
    elif verdict.last is None and not anchored and verdict.unchained == 0:
        verdict.problem = Problem(0, None, "no records")
    return verdict


def _check(
    key: bytes, record: Record, verdict: Verdict, recent: OrderedDict[int, str], anchored: bool
) -> str | None:
    seq, chain = _int(record.get(SEQ)), record.get(CHAIN)
    if seq is None or not isinstance(chain, str) or not _is_hex(chain) or len(chain) != 64:
        return "malformed chain fields (TURRET_SEQ or TURRET_CHAIN)"
    last = verdict.last
    if PREV_SEQ in record:
        problem = _check_link(
            key, record, seq=seq, chain=chain, last=last, first=verdict.first, recent=recent,
            anchored=anchored,
        )
        if problem is not None:
            return problem
        if last is not None and last.seq > (_int(record.get(PREV_SEQ)) or 0):
            verdict.windows += 1
    elif last is None:
        if not anchored:
            return f"the records start at seq {seq}: the records before it are missing"
    elif seq <= last.seq:
        return f"seq {seq} after seq {last.seq}: a record reordered, duplicated or inserted"
    elif seq > last.seq + 1:
        missing = f"{last.seq + 1}" if seq == last.seq + 2 else f"{last.seq + 1}..{seq - 1}"
        return f"seq {missing} missing before seq {seq}: deleted, or reordered"
    elif not hmac.compare_digest(link(key, last.chain, record), chain):
        return f"seq {seq} does not verify: modified, inserted, or chained under another key"
    verdict.checked += 1
    verdict.first = verdict.first or Head(seq, chain)
    verdict.last = Head(seq, chain)
    recent[seq] = chain
    if len(recent) > MAX_EVERY:
        recent.popitem(last=False)
    return None


def _check_link(
    key: bytes, record: Record, *, seq: int, chain: str, last: Head | None, first: Head | None,
    recent: Mapping[int, str], anchored: bool,
) -> str | None:
    """A run's first record: it verifies from its own link, and the link goes back no further
    than the last record seen (the window after a crash lies between the two)."""
    prev_seq, prev = _int(record.get(PREV_SEQ)), record.get(PREV)
    if prev_seq is None or not isinstance(prev, str) or len(prev) != 64 or not _is_hex(prev):
        return f"seq {seq}: malformed chain link (TURRET_CHAIN_PREV_SEQ or TURRET_CHAIN_PREV)"
    if not hmac.compare_digest(link(key, prev, record), chain):
        return f"seq {seq} does not verify: modified, inserted, or chained under another key"
    if last is None:
        if prev_seq != 0 and not anchored:
            return f"the records start at seq {seq}: the records up to seq {prev_seq} are missing"
        return None
    if prev_seq == 0:
        return f"seq {seq} starts a new chain after seq {last.seq} (the state store was reset?)"
    if not prev_seq <= last.seq < seq:
        return (
            f"seq {seq} resumes from seq {prev_seq} but follows seq {last.seq}: "
            "records deleted, reordered or inserted"
        )
    if prev_seq not in recent and anchored and first is not None and prev_seq < first.seq:
        return None  # a window that begins inside a crash window: its link lies before it
    if prev_seq not in recent or not hmac.compare_digest(recent[prev_seq], prev):
        return f"seq {seq} resumes from a seq {prev_seq} that is not the one in the records"
    return None


def _check_head(head: Head, verdict: Verdict, seen: str | None) -> Problem | None:
    last = verdict.last
    if last is None or head.seq > last.seq:
        upto = "no chained records" if last is None else f"the records end at seq {last.seq}"
        return Problem(
            0, None, f"the published head is seq {head.seq} but {upto}: the tail was deleted"
        )
    if seen is None:
        return None  # before the records given (`--since`): nothing to compare it with
    if not hmac.compare_digest(seen, head.chain):
        return Problem(
            0, head.seq,
            f"seq {head.seq} has another chain value than the published head: rewritten",
        )
    return None


def _int(value: object) -> int | None:
    return int(value) if isinstance(value, str) and _DIGITS.fullmatch(value) else None


def _is_hex(text: str) -> bool:
    return all(c in "0123456789abcdef" for c in text)
