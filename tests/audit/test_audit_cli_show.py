"""`turret audit`: the table, the filters, `--json`, `--since`, `-n`, following a file, the
journal reader, the exit statuses — and nothing a record holds reaches the terminal raw."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
import unicodedata
from collections.abc import Callable
from pathlib import Path

import pytest

from turret import auditread, cli
from turret.admin_client import audit
from turret.auditview import Query, matches, parse_since, row, safe

NOW = 1_780_000_000.0


def rec(ts: float, **fields: str) -> dict[str, str]:
    base = {"MESSAGE": "m", "MESSAGE_ID": "x", "PRIORITY": "6", "TURRET_EVENT": "decision"}
    return {"ts": f"{ts:.6f}", **base, **fields}


RECORDS = [
    rec(NOW - 7200, TURRET_AGENT="opencode", TURRET_SERVICE="gitea", TURRET_METHOD="GET",
        TURRET_PATH="/api/v1/user", TURRET_DECISION="allow", TURRET_REASON="granted"),
    rec(NOW - 3000, TURRET_AGENT="opencode", TURRET_SERVICE="gitea", TURRET_METHOD="DELETE",
        TURRET_PATH="/api/v1/repos/me/x", TURRET_DECISION="deny", TURRET_REASON="no grant",
        TURRET_STATUS="403"),
    rec(NOW - 600, TURRET_AGENT="ci-bot", TURRET_CAPABILITY="ntfy.publish",
        TURRET_SERVICE="ntfy", TURRET_DECISION="allow", TURRET_REASON="granted"),
    rec(NOW - 60, TURRET_EVENT="outcome", TURRET_AGENT="ci-bot", TURRET_CAPABILITY="ntfy.publish",
        TURRET_SERVICE="ntfy", TURRET_STATUS="200", TURRET_REASON="ok"),
    rec(NOW - 30, TURRET_EVENT="admin_action", MESSAGE="agent opencode revoked by uid 0"),
]  # fmt: skip


@pytest.fixture
def audit_file(tmp_path: Path) -> Path:
    path = tmp_path / "audit.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in RECORDS))
    return path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = cli.main(["audit", *argv])
    out, err = capsys.readouterr()
    return status, out, err


def test_audit_table_has_a_header_and_a_row_per_record(
    capsys: pytest.CaptureFixture[str], audit_file: Path
) -> None:
    status, out, err = run(capsys, "--file", str(audit_file))
    assert (status, err) == (0, "")
    lines = out.splitlines()
    assert lines[0].split() == ["TIME", "AGENT", "EVENT", "DECISION", "SERVICE", "TARGET",
                                "STATUS", "REASON"]  # fmt: skip
    assert len(lines) == 6
    assert "DELETE /api/v1/repos/me/x" in lines[2] and "403" in lines[2]
    assert "ntfy.publish" in lines[3] and "no grant" in lines[2]
    assert "agent opencode revoked by uid 0" in lines[5]  # no reason: the message
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(NOW - 7200))
    assert lines[1].startswith(stamp)


@pytest.mark.parametrize(
    ("argv", "expect"),
    [
        (["--agent", "opencode"], [0, 1]),
        (["--agent", "nobody"], []),
        (["--service", "ntfy"], [2, 3]),
        (["--capability", "ntfy.publish"], [2, 3]),
        (["--decision", "deny"], [1]),
        (["--decision", "allow"], [0, 2]),
        (["--event", "outcome"], [3]),
        (["--event", "admin_action"], [4]),
        (["--since", "1h"], [1, 2, 3, 4]),
        (["--since", "45m"], [2, 3, 4]),
        (["--since", "90s"], [3, 4]),
        (["--since", "2d"], [0, 1, 2, 3, 4]),
        (["--agent", "ci-bot", "--decision", "allow"], [2]),
        (["--agent", "ci-bot", "--since", "5m"], [3]),
        (["-n", "2"], [3, 4]),
        (["-n", "0"], [0, 1, 2, 3, 4]),
        (["--agent", "opencode", "-n", "1"], [1]),
    ],
)
def test_audit_filters_select_the_records(
    capsys: pytest.CaptureFixture[str], audit_file: Path, monkeypatch: pytest.MonkeyPatch,
    argv: list[str], expect: list[int],
) -> None:
    monkeypatch.setattr(time, "time", lambda: NOW)
    status, out, _ = run(capsys, "--file", str(audit_file), "--json", *argv)
    assert status == 0
    assert [json.loads(line) for line in out.splitlines()] == [RECORDS[i] for i in expect]


def test_audit_since_a_date(
    capsys: pytest.CaptureFixture[str], audit_file: Path
) -> None:
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(NOW - 100))
    status, out, _ = run(capsys, "--file", str(audit_file), "--json", "--since", when)
    assert status == 0 and len(out.splitlines()) == 2


@pytest.mark.parametrize("text", ["1w", "-1h", "", "yesterday", "1h ago", "10", "2026-13-01",
                                  "1\u0663h", "99999999999d"])  # fmt: skip
def test_audit_bad_since_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], audit_file: Path, text: str
) -> None:
    status, out, err = run(capsys, "--file", str(audit_file), f"--since={text}")
    assert status == 2 and out == "" and "--since" in err


def test_audit_since_ages_and_dates() -> None:
    assert parse_since("30s", NOW) == NOW - 30
    assert parse_since("15m", NOW) == NOW - 900
    assert parse_since(" 1h ", NOW) == NOW - 3600
    assert parse_since("2d", NOW) == NOW - 172800
    assert parse_since("2026-12-01T10:00", NOW) == time.mktime((2026, 12, 1, 10, 0, 0, 0, 0, -1))


def test_audit_a_missing_file_fails(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    status, _, err = run(capsys, "--file", str(tmp_path / "nope.jsonl"))
    assert status == 1 and "no such file" in err


def test_audit_unparsable_lines_are_shown_as_such(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "audit.jsonl"
    path.write_text(json.dumps(RECORDS[0]) + "\n[1, 2]\n{not json\n\n")
    status, out, _ = run(capsys, "--file", str(path), "--json")
    lines = [json.loads(line) for line in out.splitlines()]
    assert status == 0 and [r["TURRET_EVENT"] for r in lines] == ["decision", "unparsable",
                                                                  "unparsable"]  # fmt: skip
    assert lines[2]["MESSAGE"] == "line 3 is not a JSON object"


# Each an attack on the operator's terminal: colours and cursor moves, a title set, clearing
# the screen, a carriage return hiding the start of a line, a fake new row, C1 CSI, a bell, NUL,
# DEL, right-to-left and isolate overrides, zero-width and line/paragraph separators.
HOSTILE = [
    "\x1b[31mred\x1b[0m", "\x1b]0;title\x07", "\x1b[2J\x1b[H", "ok\rdeny", "a\nFAKE ROW",
    "\x9b31m", "\x07", "nul\x00", "del\x7f", "\u202eevil", "\u2066iso\u2069", "zero\u200bwidth",
    "line\u2028sep", "para\u2029sep", "\ufeffbom", "tab\there",
]  # fmt: skip


def terminal_safe(text: str) -> bool:
    """Only printable characters and the newlines between rows (no Cc, Cf, Zl, Zp)."""
    return all(c == "\n" or c.isprintable() for c in text) and not any(
        unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") for c in text if c != "\n"
    )


@pytest.mark.parametrize("value", HOSTILE)
@pytest.mark.parametrize(
    "field", ["TURRET_AGENT", "TURRET_PATH", "TURRET_REASON", "TURRET_EVENT", "TURRET_STATUS",
              "TURRET_CAPABILITY", "MESSAGE", "TURRET_SERVICE", "TURRET_DECISION"],
)  # fmt: skip
@pytest.mark.parametrize("as_json", [False, True])
def test_audit_no_control_character_reaches_the_terminal(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, field: str, value: str, as_json: bool
) -> None:
    record = {**rec(NOW, TURRET_AGENT="a", TURRET_PATH="/p", TURRET_METHOD="GET"), field: value}
    path = tmp_path / "audit.jsonl"
    path.write_text(json.dumps(record) + "\n")
    status, out, _ = run(capsys, "--file", str(path), *(["--json"] if as_json else []))
    assert status == 0 and terminal_safe(out), repr(out)
    assert len(out.splitlines()) == (1 if as_json else 2)  # no forged row
    if as_json:
        assert json.loads(out)[field] == value  # escaped, not lost


def test_audit_hostile_field_names_and_non_string_values_are_escaped_in_json(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "audit.jsonl"
    record = {**rec(NOW), "TURRET_\x1b[2J": "x", "TURRET_AGENT": ["\x1b[31m", 1]}
    path.write_text(json.dumps(record) + "\n")
    for argv in (["--json"], []):
        status, out, _ = run(capsys, "--file", str(path), *argv)
        assert status == 0 and terminal_safe(out)


def test_audit_cells_are_capped() -> None:
    cells = row(rec(NOW, TURRET_REASON="r" * 500))
    assert len(cells[-1]) == 80 and cells[-1].endswith("...")
    assert safe("\x1b" * 100) == ("\\x1b" * 20)[:77] + "..."


def test_audit_query_matches_only_audit_records() -> None:
    assert not matches({"MESSAGE": "turret: INFO listening"}, Query())
    assert matches(RECORDS[0], Query(agent="opencode", decision="allow"))
    assert not matches({"TURRET_EVENT": "decision"}, Query(since=1.0))  # no time: not since


def follow_args(path: Path, *extra: str) -> argparse.Namespace:
    return cli._parser().parse_args(["audit", "--file", str(path), "-f", *extra])


def appender(path: Path, batches: list[list[str]]) -> Callable[[], bool]:
    """A `Wait` that appends the next batch of lines each poll, and stops after the last."""

    def wait() -> bool:
        if not batches:
            return False
        with path.open("a") as f:
            f.write("".join(batches.pop(0)))
        return True

    return wait


def test_audit_follow_prints_the_tail_then_each_appended_record(
    capsys: pytest.CaptureFixture[str], audit_file: Path
) -> None:
    later = [json.dumps(rec(NOW + i, TURRET_AGENT=f"late-{i}")) + "\n" for i in range(3)]
    # a record written in two pieces is read once complete
    batches = [[later[0]], [later[1][:20]], [later[1][20:], later[2]], []]
    status = audit.show(follow_args(audit_file, "--json"), wait=appender(audit_file, batches))
    out = capsys.readouterr().out.splitlines()
    assert status == 0
    assert [json.loads(line) for line in out] == [*RECORDS, *(json.loads(x) for x in later)]


def test_audit_follow_applies_the_filters_and_prints_fixed_columns(
    capsys: pytest.CaptureFixture[str], audit_file: Path
) -> None:
    later = [json.dumps(rec(NOW, TURRET_AGENT=a, TURRET_REASON="r\x1b[2J")) + "\n"
             for a in ("x", "ci-bot", "y", "ci-bot")]  # fmt: skip
    wait = appender(audit_file, [later[:2], later[2:]])
    status = audit.show(follow_args(audit_file, "--agent", "ci-bot"), wait=wait)
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert status == 0 and terminal_safe(out)
    assert lines[0].startswith("TIME") and len(lines) == 5  # two old, two new ci-bot records
    assert all(line.index("ci-bot") == lines[1].index("ci-bot") for line in lines[1:])


async def test_audit_follow_as_a_process_sees_records_appended_later(audit_file: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "turret", "audit", "--file", str(audit_file), "-f", "--json",
        "-n", "1", stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None
    try:
        async with asyncio.timeout(15):
            assert json.loads(await proc.stdout.readline()) == RECORDS[-1]
            with audit_file.open("a") as f:
                f.write(json.dumps(rec(NOW, TURRET_AGENT="late")) + "\n")
            assert json.loads(await proc.stdout.readline())["TURRET_AGENT"] == "late"
    finally:
        proc.terminate()
        await proc.wait()


def test_audit_without_journalctl_and_without_file_is_unavailable(tmp_path: Path) -> None:
    import subprocess  # noqa: PLC0415 - only this test runs a child synchronously

    env = {**os.environ, "PATH": str(tmp_path)}
    for argv in (["audit"], ["audit", "verify", "--key-file", os.devnull]):
        result = subprocess.run(  # noqa: S603 - our own interpreter and module
            [sys.executable, "-m", "turret", *argv], env=env, capture_output=True, text=True,
            check=False,
        )  # fmt: skip
        assert result.returncode in (69, 1), result.stderr
        if argv == ["audit"]:
            assert result.returncode == 69 and "journalctl is not installed" in result.stderr


def test_audit_journal_command_line_matches_turrets_unit_and_the_filters() -> None:
    argv = auditread.journal_argv(
        Query(agent="a b", decision="deny").fields(), 1700000000.5, 50, True, "turret.service"
    )
    assert argv == [
        "journalctl", "--output=json", "--no-pager", "--quiet", "_SYSTEMD_UNIT=turret.service",
        "SYSLOG_IDENTIFIER=turret", "TURRET_AGENT=a b", "TURRET_DECISION=deny",
        "--since=@1700000000.500000", "--lines=50", "--follow",
    ]  # fmt: skip
    assert auditread.journal_argv({}, None, None, False)[-1] == "SYSLOG_IDENTIFIER=turret"


def test_audit_journal_reader_reads_json_lines_from_the_command() -> None:
    script = "import json\nfor i in range(3): print(json.dumps({'TURRET_EVENT': str(i)}))\n"
    records = list(auditread.read_journal([sys.executable, "-c", script]))
    assert [r["TURRET_EVENT"] for r in records] == ["0", "1", "2"]
    with pytest.raises(OSError, match="journalctl failed: nope"):
        list(auditread.read_journal(
            [sys.executable, "-c", "import sys; sys.stderr.write('nope'); sys.exit(1)"]
        ))  # fmt: skip
