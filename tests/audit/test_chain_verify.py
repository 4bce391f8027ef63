"""`turret.auditchain.verify` over trails written by the real chain: every kind of tampering is
found at the first record it touches, and what verify cannot see is pinned down too."""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.audit.conftest import KEY, Trail
from turret.auditchain import (
    CHAIN,
    GENESIS,
    PREV,
    PREV_SEQ,
    SEQ,
    Head,
    canonical,
    covered,
    link,
    parse_head,
    verify,
)
from turret.records import Event

Records = list[dict[str, object]]


def written(trail: Trail, *runs: int) -> Records:
    for n in runs:
        trail.run(n)
    return copy.deepcopy(trail.records)


def problem_of(records: Records, **kwargs: object) -> str:
    verdict = verify(KEY, records, **kwargs)  # type: ignore[arg-type]
    assert verdict.problem is not None, "tampering not found"
    return verdict.problem.detail


def test_chain_canonical_form_is_sorted_compact_utf8_json_of_the_covered_fields() -> None:
    record = {"TURRET_B": "é", "MESSAGE": "m", "PRIORITY": "6", "MESSAGE_ID": "x",
              "TURRET_A": "1", CHAIN: "ff" * 32, "_PID": "7", "__CURSOR": "c", "ts": "1.0",
              "SYSLOG_IDENTIFIER": "turret", "CODE_LINE": "3"}  # fmt: skip
    assert canonical(record) == (
        '{"MESSAGE":"m","MESSAGE_ID":"x","PRIORITY":"6","TURRET_A":"1","TURRET_B":"é"}'
    ).encode()
    expected = hmac.new(KEY, bytes(32) + canonical(record), hashlib.sha256).hexdigest()
    assert link(KEY, GENESIS, record) == expected


def test_chain_intact_trail_verifies_from_the_first_record(trail: Trail) -> None:
    records = written(trail, 10)
    verdict = verify(KEY, records)
    assert verdict.problem is None and verdict.checked == 11
    assert verdict.first == Head(1, str(records[0][CHAIN]))
    assert verdict.last == Head(11, str(records[-1][CHAIN]))
    assert records[0]["TURRET_EVENT"] == Event.CHAIN_STARTED.label
    assert (records[0][PREV_SEQ], records[0][PREV]) == ("0", GENESIS)
    assert [int(str(r[SEQ])) for r in records] == list(range(1, 12))


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("MESSAGE", "opencode: deny - rule 3"),
        ("TURRET_DECISION", "deny"),
        ("TURRET_AGENT", "other"),
        ("PRIORITY", "3"),
        ("MESSAGE_ID", Event.OUTCOME.value),
        ("TURRET_EVENT", "outcome"),
        ("TURRET_PATH", "/p/3 "),  # one trailing space
        ("TURRET_PATH", "/P/3"),  # case
        ("TURRET_PATH", "/p/\u0663"),  # a look-alike digit
    ],
)
def test_chain_a_changed_field_is_found_at_its_record(
    trail: Trail, field: str, value: str
) -> None:
    records = written(trail, 8)
    records[4][field] = value
    verdict = verify(KEY, records)
    assert verdict.problem is not None and verdict.problem.index == 5
    assert "modified" in verdict.problem.detail and verdict.checked == 4


@pytest.mark.parametrize("field", ["TURRET_EXTRA", "MESSAGE_ID", "PRIORITY", "MESSAGE"])
def test_chain_a_field_added_or_removed_is_found(trail: Trail, field: str) -> None:
    records = written(trail, 6)
    if field in records[3]:
        del records[3][field]
    else:
        records[3][field] = "x"
    assert "seq 4 does not verify" in problem_of(records)


def test_chain_a_turret_field_added_where_none_was_is_found(trail: Trail) -> None:
    records = written(trail, 6)
    records[2]["TURRET_STATUS"] = "200"
    assert "seq 3 does not verify" in problem_of(records)


def test_chain_fields_journald_adds_are_not_covered(trail: Trail) -> None:
    records = written(trail, 3)
    for r in records:
        r.update({"__CURSOR": "s=1", "_PID": "42", "__REALTIME_TIMESTAMP": "1", "ts": "2"})
    assert verify(KEY, records).problem is None


@pytest.mark.parametrize(("where", "expect"), [
    (5, "seq 6 missing"),
    (0, "the records start at seq 2"),
    (1, "seq 2 missing"),
])  # fmt: skip
def test_chain_a_deleted_record_is_found(trail: Trail, where: int, expect: str) -> None:
    records = written(trail, 9)
    del records[where]
    assert expect in problem_of(records)


def test_chain_several_deleted_records_are_named_as_a_range(trail: Trail) -> None:
    records = written(trail, 9)
    del records[3:6]
    assert "seq 4..6 missing" in problem_of(records)


def test_chain_a_deleted_last_record_is_found_only_against_a_published_head(
    trail: Trail,
) -> None:
    records = written(trail, 5)
    published = Head(int(str(records[-1][SEQ])), str(records[-1][CHAIN]))
    del records[-1]
    assert verify(KEY, records).problem is None  # the limit: nothing after it to disagree
    assert "the tail was deleted" in problem_of(records, head=published)
    assert "the tail was deleted" in problem_of(records[:2], head=published)


def test_chain_a_published_head_matches_the_intact_trail_and_earlier_heads(trail: Trail) -> None:
    records = written(trail, 5)
    for r in (records[-1], records[2]):
        head = parse_head(f"{r[SEQ]}:{r[CHAIN]}")
        assert verify(KEY, records, head=head).problem is None


def test_chain_a_rewritten_trail_disagrees_with_the_published_head(trail: Trail) -> None:
    records = written(trail, 5)
    published = Head(3, "ab" * 32)
    assert "another chain value" in problem_of(records, head=published)


def test_chain_an_inserted_record_is_found(trail: Trail) -> None:
    records = written(trail, 6)
    forged = {**records[3], "MESSAGE": "forged", SEQ: "4", CHAIN: "00" * 32}
    records.insert(3, forged)
    assert "seq 4 does not verify" in problem_of(records)
    records[3] = {**records[4], "MESSAGE": "forged"}  # a copy of the next record, edited
    assert "seq 4 does not verify" in problem_of(records)


def test_chain_an_inserted_record_with_a_correct_looking_next_seq_at_the_end_is_found(
    trail: Trail,
) -> None:
    records = written(trail, 4)
    last = records[-1]
    records.append({**last, "MESSAGE": "forged", SEQ: str(int(str(last[SEQ])) + 1)})
    assert "does not verify" in problem_of(records)


def test_chain_two_swapped_records_are_found(trail: Trail) -> None:
    records = written(trail, 8)
    records[3], records[4] = records[4], records[3]
    assert "seq 4 missing before seq 5: deleted, or reordered" in problem_of(records)
    records[3], records[4] = records[4], records[3]
    records[2], records[6] = records[6], records[2]
    assert "seq 3..6 missing before seq 7" in problem_of(records)


def test_chain_a_duplicated_record_is_found(trail: Trail) -> None:
    records = written(trail, 6)
    records.insert(4, dict(records[3]))
    assert "seq 4 after seq 4" in problem_of(records)


def test_chain_seq_rewritten_consistently_after_a_deletion_is_found(trail: Trail) -> None:
    records = written(trail, 8)
    del records[3]
    for r in records[3:]:
        r[SEQ] = str(int(str(r[SEQ])) - 1)
    assert "seq 4 does not verify" in problem_of(records)


def test_chain_a_trail_chained_under_another_key_does_not_verify(trail: Trail) -> None:
    trail.key = b"another-key"
    records = written(trail, 3)
    assert "another key" in problem_of(records)


def test_chain_a_record_spliced_in_from_another_trail_is_found(tmp_path: Path) -> None:
    for name in ("a", "b"):
        (tmp_path / name).mkdir(mode=0o700)
    a, b = Trail(tmp_path / "a"), Trail(tmp_path / "b")
    a.run(5)
    b.run(5, agent="other")
    records = copy.deepcopy(a.records)
    records[3] = b.records[3]  # same key, same seq, another trail's history
    assert "seq 4 does not verify" in problem_of(records)


@pytest.mark.parametrize("bad", ["", "x", "-1", "\u0663", "1e3", " 4"])
def test_chain_malformed_seq_is_refused(trail: Trail, bad: str) -> None:
    records = written(trail, 5)
    records[3][SEQ] = bad
    assert "malformed" in problem_of(records)


@pytest.mark.parametrize("bad", ["", "zz" * 32, "ab" * 31, "AB" * 32])
def test_chain_malformed_chain_value_is_refused(trail: Trail, bad: str) -> None:
    records = written(trail, 5)
    records[3][CHAIN] = bad
    assert "malformed" in problem_of(records)


def test_chain_a_missing_chain_value_is_refused(trail: Trail) -> None:
    records = written(trail, 5)
    del records[2][CHAIN]
    assert "malformed" in problem_of(records)


def test_chain_restart_after_a_clean_stop_links_to_the_last_seq(trail: Trail) -> None:
    records = written(trail, 5, 3, 2)
    verdict = verify(KEY, records)
    assert verdict.problem is None and verdict.windows == 0
    resumed = [r for r in records if r["TURRET_EVENT"] == Event.CHAIN_RESUMED.label]
    assert [(r[SEQ], r[PREV_SEQ], r["TURRET_CHAIN_CLEAN"]) for r in resumed] == [
        ("7", "6", "yes"), ("11", "10", "yes"),
    ]  # fmt: skip
    assert [int(str(r[SEQ])) for r in records] == list(range(1, 14))


def test_chain_restart_after_a_crash_skips_the_window_and_verifies(trail: Trail) -> None:
    trail.run(6, clean=False)  # persisted at seq 1 and 5; 7 records written
    trail.run(2)
    verdict = verify(KEY, trail.records)
    assert verdict.problem is None and verdict.windows == 1
    resumed = trail.records[7]
    assert (resumed[SEQ], resumed[PREV_SEQ], resumed["TURRET_CHAIN_CLEAN"]) == ("9", "5", "no")
    assert resumed["PRIORITY"] == "4"


def test_chain_the_limit_deletion_inside_a_crash_window_is_not_seen(trail: Trail) -> None:
    trail.run(6, clean=False)
    trail.run(1)
    records = copy.deepcopy(trail.records)
    del records[5:7]  # seq 6 and 7: written after the last persisted head (5), before the crash
    assert verify(KEY, records).problem is None
    del records[4]  # seq 5, the persisted head itself: the resumed record's link finds it
    assert "resumes from seq 5" in problem_of(records)


def test_chain_restart_gap_without_its_chain_resumed_record_is_found(trail: Trail) -> None:
    records = written(trail, 4, 2)
    resumed = next(i for i, r in enumerate(records) if r.get(PREV_SEQ) == "5")
    del records[resumed]
    assert "seq 6 missing" in problem_of(records)


def test_chain_crash_gap_without_its_chain_resumed_record_is_found(trail: Trail) -> None:
    trail.run(6, clean=False)
    trail.run(2)
    records = copy.deepcopy(trail.records)
    del records[7]
    assert "missing" in problem_of(records)


def test_chain_a_resumed_record_with_a_rewritten_link_is_found(trail: Trail) -> None:
    records = written(trail, 4, 2)
    resumed = next(r for r in records if r.get(PREV_SEQ) == "5")
    resumed[PREV_SEQ] = "3"
    assert "does not verify" in problem_of(records)


def test_chain_a_reset_state_store_starting_a_new_chain_is_found(
    trail: Trail, tmp_path: Path
) -> None:
    first = written(trail, 3)
    fresh = tmp_path / "fresh"
    fresh.mkdir(mode=0o700)
    second = written(Trail(fresh), 2)
    assert "starts a new chain after seq 4" in problem_of(first + second)


def test_chain_unchained_records_are_counted_not_verified(trail: Trail) -> None:
    records = written(trail, 3)
    refusal = {"MESSAGE": "refusing to start", "TURRET_EVENT": "config_error"}
    verdict = verify(KEY, [refusal, *records, refusal])
    assert verdict.problem is None and (verdict.unchained, verdict.checked) == (2, 4)


def test_chain_a_window_verifies_from_its_first_record_when_anchored(trail: Trail) -> None:
    records = written(trail, 5, 3)
    for start in (3, 6, 7):
        assert "the records" in problem_of(records[start:])
        assert verify(KEY, records[start:], anchored=True).problem is None
    tampered = copy.deepcopy(records[3:])
    tampered[2]["MESSAGE"] = "x"
    assert "does not verify" in problem_of(tampered, anchored=True)


def test_chain_a_window_starting_inside_a_crash_window_verifies_when_anchored(
    trail: Trail,
) -> None:
    trail.run(6, clean=False)  # head persisted at seq 5; seq 6 and 7 in the crash window
    trail.run(2)
    window = copy.deepcopy(trail.records[6:])  # from seq 7 on: the link (5) lies before it
    assert verify(KEY, window, anchored=True).problem is None
    window[0]["MESSAGE"] = "x"  # the anchor itself is taken as given...
    assert verify(KEY, window, anchored=True).problem is None
    window[1]["TURRET_CHAIN_PREV_SEQ"] = "4"  # ...but the resumed record is not
    assert "does not verify" in problem_of(window, anchored=True)


def test_chain_no_records_is_not_a_pass(trail: Trail) -> None:
    assert problem_of([]) == "no records"
    assert verify(KEY, [], anchored=True).problem is None


@pytest.mark.parametrize("text", ["5", "5:", ":ab", "x:" + "ab" * 32, "5:" + "ab" * 31,
                                  "5:" + "zz" * 32])  # fmt: skip
def test_chain_parse_head_refuses_what_is_not_seq_colon_chain(text: str) -> None:
    with pytest.raises(ValueError, match="SEQ:CHAIN"):
        parse_head(text)


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_chain_any_change_to_any_covered_value_is_found(tmp_path_factory: pytest.TempPathFactory,
                                                        data: st.DataObject) -> None:
    directory = tmp_path_factory.mktemp("state")
    directory.chmod(0o700)
    records = written(Trail(directory), 4)
    i = data.draw(st.integers(0, len(records) - 1))
    keys = sorted(k for k in covered(records[i]) if k != SEQ)
    field = data.draw(st.sampled_from(keys))
    value = str(records[i][field])
    new = data.draw(st.text(max_size=20).filter(lambda t: t != value))
    records[i][field] = new
    verdict = verify(KEY, json.loads(json.dumps(records)))
    assert verdict.problem is not None and verdict.problem.index == i + 1
