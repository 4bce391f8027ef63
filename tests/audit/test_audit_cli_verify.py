"""`turret audit verify` on files: what it prints and exits with, the key never in its output,
`--since` windows, `--head`, a journal export with journald's own fields and log lines."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.audit.conftest import Trail
from turret import cli
from turret.auditchain import CHAIN, SEQ

KEY_TEXT = "chain-key-canary-5e0b7d19c4"


@pytest.fixture
def keyed(trail: Trail, tmp_path: Path) -> tuple[Trail, Path]:
    trail.key = KEY_TEXT.encode()
    key_file = tmp_path / "chain-key"
    key_file.write_text(KEY_TEXT + "\n")  # as a credential file: one trailing newline
    return trail, key_file


def write(path: Path, records: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def verify_cli(
    capsys: pytest.CaptureFixture[str], key_file: Path, *argv: str
) -> tuple[int, str, str]:
    status = cli.main(["audit", "verify", "--key-file", str(key_file), *argv])
    out, err = capsys.readouterr()
    assert KEY_TEXT not in out + err
    return status, out, err


def test_verify_cli_passes_an_intact_trail_with_its_count(
    capsys: pytest.CaptureFixture[str], keyed: tuple[Trail, Path], tmp_path: Path
) -> None:
    trail, key_file = keyed
    trail.run(4)
    trail.run(2)
    path = write(tmp_path / "a.jsonl", trail.records)
    status, out, err = verify_cli(capsys, key_file, "--file", str(path))
    assert (status, err) == (0, "")
    assert out == "OK: 8 chained record(s) verified (seq 1..8)\n"
    status, out, _ = verify_cli(capsys, key_file, "--file", str(path), "--json")
    doc = json.loads(out)
    assert (status, doc["ok"], doc["verified"], doc["problem"]) == (0, True, 8, None)
    assert doc["last"] == f"8:{trail.records[-1][CHAIN]}"


def test_verify_cli_names_the_first_tampered_record_and_exits_1(
    capsys: pytest.CaptureFixture[str], keyed: tuple[Trail, Path], tmp_path: Path
) -> None:
    trail, key_file = keyed
    trail.run(5)
    records = trail.records
    for name, tampered, expect in [
        ("first", records[1:], "TAMPERED at record 1: the records start at seq 2"),
        ("edited", [*records[:2], {**records[2], "TURRET_AGENT": "x"}, *records[3:]],
         "TAMPERED at record 3: seq 3 does not verify"),
    ]:  # fmt: skip
        path = write(tmp_path / f"{name}.jsonl", tampered)
        status, out, _ = verify_cli(capsys, key_file, "--file", str(path))
        assert status == 1 and out.startswith(expect), out


def test_verify_cli_with_a_published_head_finds_a_truncated_tail(
    capsys: pytest.CaptureFixture[str], keyed: tuple[Trail, Path], tmp_path: Path
) -> None:
    trail, key_file = keyed
    trail.run(5)
    head = f"{trail.records[-1][SEQ]}:{trail.records[-1][CHAIN]}"
    path = write(tmp_path / "cut.jsonl", trail.records[:-2])
    assert verify_cli(capsys, key_file, "--file", str(path))[0] == 0
    status, out, _ = verify_cli(capsys, key_file, "--file", str(path), "--head", head)
    assert status == 1 and "TAMPERED at the end: the published head is seq 6" in out


def test_verify_cli_a_since_window_is_anchored_at_its_first_record(
    capsys: pytest.CaptureFixture[str], keyed: tuple[Trail, Path], tmp_path: Path
) -> None:
    trail, key_file = keyed
    trail.run(6)
    records = [{**r, "ts": f"{1000.0 + i:.6f}"} for i, r in enumerate(trail.records)]
    records[-1]["ts"] = "9999999999.0"  # a record written "now"; the rest long ago
    path = write(tmp_path / "a.jsonl", records)
    status, out, _ = verify_cli(capsys, key_file, "--file", str(path), "--since", "1h")
    assert status == 0 and out.startswith("OK: 1 chained record(s) verified (seq 7..7)")


def test_verify_cli_reads_a_journal_export_with_journalds_fields_and_log_lines(
    capsys: pytest.CaptureFixture[str], keyed: tuple[Trail, Path], tmp_path: Path
) -> None:
    trail, key_file = keyed
    trail.run(3)
    exported: list[dict[str, object]] = []
    for i, r in enumerate(trail.records):
        exported.append({"__CURSOR": f"s={i}", "__REALTIME_TIMESTAMP": str(10**15 + i),
                         "_SYSTEMD_UNIT": "turret.service", "SYSLOG_IDENTIFIER": "turret",
                         "CODE_FILE": "audit.py", "_PID": "42", **r})  # fmt: skip
        exported.append({"MESSAGE": "turret: INFO a log line", "SYSLOG_IDENTIFIER": "turret"})
    path = write(tmp_path / "export.jsonl", exported)
    status, out, _ = verify_cli(capsys, key_file, "--file", str(path))
    assert status == 0 and out == "OK: 4 chained record(s) verified (seq 1..4)\n"


def test_verify_cli_under_the_wrong_key_fails(
    capsys: pytest.CaptureFixture[str], keyed: tuple[Trail, Path], tmp_path: Path
) -> None:
    trail, _ = keyed
    trail.run(2)
    path = write(tmp_path / "a.jsonl", trail.records)
    other = tmp_path / "other-key"
    other.write_text(KEY_TEXT + "x")
    status, out, _ = verify_cli(capsys, other, "--file", str(path))
    assert status == 1 and "another key" in out


@pytest.mark.parametrize("kind", ["missing", "empty", "directory"])
def test_verify_cli_an_unusable_key_file_fails_without_showing_it(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, kind: str
) -> None:
    key_file = tmp_path / "key"
    if kind == "empty":
        key_file.write_text("\n")
    elif kind == "directory":
        key_file.mkdir()
    path = write(tmp_path / "a.jsonl", [])
    status, out, err = verify_cli(capsys, key_file, "--file", str(path))
    assert status == 1 and out == "" and str(key_file) in err


@pytest.mark.parametrize("argv", [["--head", "12"], ["--head", "1:xyz"], ["--since", "soon"]])
def test_verify_cli_bad_arguments_are_usage_errors(
    capsys: pytest.CaptureFixture[str], keyed: tuple[Trail, Path], tmp_path: Path,
    argv: list[str],
) -> None:
    _, key_file = keyed
    path = write(tmp_path / "a.jsonl", [])
    status, out, _ = verify_cli(capsys, key_file, "--file", str(path), *argv)
    assert status == 2 and out == ""


def test_verify_cli_an_empty_file_is_not_a_pass(
    capsys: pytest.CaptureFixture[str], keyed: tuple[Trail, Path], tmp_path: Path
) -> None:
    _, key_file = keyed
    path = write(tmp_path / "a.jsonl", [])
    status, out, _ = verify_cli(capsys, key_file, "--file", str(path))
    assert status == 1 and "no records" in out
