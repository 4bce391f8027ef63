"""`turret audit`: the audit records as a table (or JSON lines), from journald or a file;
`turret audit verify`, the tamper-evident chain recomputed; `turret audit head`, the chain's
head from the admin socket, to publish off the host.

Reading the journal needs no admin socket: root or the `systemd-journal` group reads it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator
from typing import Any

from turret import auditread
from turret.admin_client.base import (
    EX_FAILED,
    EX_OK,
    EX_UNAVAILABLE,
    EX_USAGE,
    Call,
    Subparsers,
    add_parser,
    table,
)
from turret.auditchain import Head, Verdict, parse_head, verify
from turret.auditview import COLUMNS, Query, matches, parse_since, row, safe

Record = dict[str, object]
WIDTHS = (19, 14, 18, 8, 12, 32, 6)  # every column but the last, when following


def add_commands(sub: Subparsers) -> None:
    """`turret audit`, `turret audit verify`, `turret audit head`."""
    p = sub.add_parser("audit", help="show the audit records (journald or --file)")
    _source_arguments(p)
    p.add_argument("--agent", metavar="AGENT")
    p.add_argument("--service", metavar="SERVICE")
    p.add_argument("--capability", metavar="NAME")
    p.add_argument("--decision", choices=("allow", "deny"))
    p.add_argument("--event", metavar="EVENT", help="an event name, e.g. decision, admin_action")
    p.add_argument("-n", "--lines", type=int, default=50, metavar="N",
                   help="the last N matching records (default 50; 0 for all)")
    p.add_argument("-f", "--follow", action="store_true", help="then print new records")
    p.add_argument("--json", action="store_true", help="one JSON object per record")
    p.set_defaults(func=show, command="audit")
    actions = p.add_subparsers(metavar="ACTION")

    v = actions.add_parser("verify", help="recompute the audit chain; exit 1 at tampering")
    _source_arguments(v)
    v.add_argument("--key-file", required=True, metavar="PATH",
                   help="the audit.chain_key credential (a file, e.g. from systemd-creds "
                        "decrypt); never printed")
    v.add_argument(
        "--head", metavar="SEQ:CHAIN",
        help="a head published earlier (turret audit head): finds a deleted tail",
    )
    v.add_argument("--json", action="store_true", help="print the result as JSON")
    v.set_defaults(func=verify_command, command="audit verify")

    add_parser(
        actions, "head", "the audit chain's current seq and chain value (admin socket)",
        lambda _args: Call("GET", "audit/head"), lambda _cmd, doc: str(doc["head"]),
    )


def _source_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--file", metavar="JSONL",
        help="read this JSON-lines file (--audit-file, or journalctl -o json)",
    )
    p.add_argument("--since", metavar="WHEN", help="an age (30m, 1h, 2d) or a date")
    p.add_argument("--unit", default=auditread.UNIT, help="Turret's unit (default %(default)s)")


def show(args: argparse.Namespace, wait: auditread.Wait | None = None) -> int:
    """`turret audit`: print the last matching records; with `--follow`, then each new one
    (`wait` paces the polls of a followed file)."""
    try:
        since = None if args.since is None else parse_since(args.since, time.time())
    except ValueError as exc:
        return _fail(args, str(exc), EX_USAGE)
    query = Query(args.agent, args.service, args.capability, args.decision, args.event, since)
    last = args.lines if args.lines > 0 else None
    try:
        existing, later = _sources(args, query, last, wait)
        chosen = [r for r in existing if matches(r, query)]
        _print(chosen[-last:] if last else chosen, later, query, args)
    except OSError as exc:
        return _unreadable(args, exc)
    except KeyboardInterrupt:
        pass
    return EX_OK


def verify_command(args: argparse.Namespace) -> int:
    """`turret audit verify`: 0 and the count when the chain holds, 1 at the first problem."""
    try:
        since = None if args.since is None else parse_since(args.since, time.time())
        head = None if args.head is None else parse_head(args.head)
    except ValueError as exc:
        return _fail(args, str(exc), EX_USAGE)
    try:
        key = auditread.read_key(args.key_file)
    except ValueError as exc:
        return _fail(args, safe(str(exc), 300), EX_FAILED)
    query = Query(since=since)
    try:
        if args.file is None:
            argv = auditread.journal_argv({}, since, None, False, args.unit)
            source = auditread.read_journal(argv)
        else:
            source = auditread.read_file(args.file)
        records = (r for r in source if matches(r, query))
        verdict = verify(key, records, anchored=since is not None, head=head)
    except OSError as exc:
        return _unreadable(args, exc)
    print(json.dumps(_verdict_doc(verdict, head)) if args.json else _verdict_text(verdict))
    return EX_FAILED if verdict.problem is not None else EX_OK


def _sources(
    args: argparse.Namespace, query: Query, last: int | None, wait: auditread.Wait | None
) -> tuple[list[Record], Iterator[Record]]:
    """The records there are now, and the ones written later (when following)."""
    if args.file is None:
        argv = auditread.journal_argv(query.fields(), query.since, last, args.follow, args.unit)
        if args.follow:  # journalctl prints the last records, then follows
            return [], auditread.read_journal(argv)
        return list(auditread.read_journal(argv)), iter([])
    if args.follow:
        return auditread.follow_file(args.file, wait or auditread.poll())
    return list(auditread.read_file(args.file)), iter([])


def _print(
    records: list[Record], later: Iterator[Record], query: Query,
    args: argparse.Namespace,
) -> None:
    """The records as a table (columns as wide as their widest cell) or JSON lines; then, when
    following, each later record that matches, in fixed columns (later rows cannot widen them)."""
    if args.json:
        for record in records:
            print(_json_line(record))
    elif args.follow:
        print(_fixed(COLUMNS))
        for record in records:
            print(_fixed(row(record)))
    elif records:
        print(table([COLUMNS, *(row(r) for r in records)]))
    sys.stdout.flush()
    for record in later:
        if matches(record, query):
            print(_json_line(record) if args.json else _fixed(row(record)), flush=True)


def _json_line(record: Record) -> str:
    # ensure_ascii: control characters and any non-ASCII reach the terminal as \u escapes
    return json.dumps(record, ensure_ascii=True, sort_keys=True, separators=(",", ":"))


def _fixed(cells: tuple[str, ...]) -> str:
    return "  ".join(c.ljust(w) for c, w in zip(cells, WIDTHS, strict=False)) + "  " + cells[-1]


def _verdict_text(v: Verdict) -> str:
    span = f" (seq {v.first.seq}..{v.last.seq})" if v.first and v.last else ""
    notes = [f"{v.unchained} record(s) carry no chain and are not covered"] if v.unchained else []
    if v.windows:
        notes.append(f"{v.windows} restart(s) after an unclean stop crossed")
    tail = "".join(f"; {n}" for n in notes)
    if v.problem is None:
        return f"OK: {v.checked} chained record(s) verified{span}{tail}"
    where = "at the end" if v.problem.index == 0 else f"at record {v.problem.index}"
    return (
        f"TAMPERED {where}: {safe(v.problem.detail, 300)}; "
        f"{v.checked} record(s) verified before it{span}{tail}"
    )


def _verdict_doc(v: Verdict, head: Head | None) -> dict[str, Any]:
    problem = v.problem
    return {
        "ok": problem is None,
        "verified": v.checked,
        "unchained": v.unchained,
        "unclean_restarts": v.windows,
        "first": None if v.first is None else str(v.first),
        "last": None if v.last is None else str(v.last),
        "published_head": None if head is None else str(head),
        "problem": None if problem is None else {
            "index": problem.index, "seq": problem.seq, "detail": problem.detail,
        },
    }


def _unreadable(args: argparse.Namespace, exc: OSError) -> int:
    """No journalctl (69, as Turret unreachable), or the file or journal cannot be read (1)."""
    if isinstance(exc, FileNotFoundError) and args.file is None:
        return _fail(args, "journalctl is not installed: read a file with --file", EX_UNAVAILABLE)
    if isinstance(exc, FileNotFoundError):
        return _fail(args, f"{safe(exc.filename)}: no such file", EX_FAILED)
    return _fail(args, safe(str(exc), 300), EX_FAILED)


def _fail(args: argparse.Namespace, message: str, status: int) -> int:
    print(f"turret {args.command}: {message}", file=sys.stderr)
    return status
