"""The auditor's command: find calls over a period, read one, export it, verify it, render it.

    realtime-audit sessions --from 2026-11-01 --to 2026-11-30 [--origin O]
                                              [--principal P] [--ended-by R] [--json]
    realtime-audit show CALL_ID [--conversation] [--events | --json]
    realtime-audit export CALL_ID [--conversation] [--format jsonl|csv] [-o FILE]
    realtime-audit export --from DATE --to DATE -o DIR [--format jsonl|csv]
    realtime-audit verify CALL_ID | --from DATE --to DATE   (exit 1 if not intact)
    realtime-audit report CALL_ID [--conversation] [-o call.html]   (alias: timeline)
    realtime-audit usage --from DATE --to DATE [--principal ID] [--json]  (per-day cost)
    realtime-audit list [--day YYYYMMDD]                    (one day, as before)

--conversation reads every call of the CALL_ID's conversation (a call continued past the
service's session cap), first to last, as one: one clock, each call's start marked.

Storage comes from AzureWebJobsStorage (connection string) or AzureWebJobsStorage__tableServiceUri
(signed-in identity via DefaultAzureCredential), or --connection-string. Exit codes: 0 done, 1 not
intact, 2 bad arguments or storage, 3 no such call, 4 the call is being deleted by retention.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence, get_args

from azure.core.exceptions import AzureError, ResourceNotFoundError

from .. import redact
from ..archive.codec import EventRecord
from ..archive.store import PURGE_FIELD, Archive
from ..archive.tables import StorageConfigError, table_service
from ..core.result import EndReason
from ..settings import archive_tables, storage_connection
from .dates import BadRange, day_range
from .day_usage import day_usage, format_usage, limits_table_name, prices_from_env, valid_table_name
from .export import FORMATS, export_call, export_range
from .report import dumps_row, render_conversation, render_timeline
from .sessions import call_summary, format_table, list_calls
from .transcript import conversation_transcript, conversation_turns, format_transcript, transcript
from .verify import Finding, VerifyReport, conversation_calls, verify_call, verify_conversation, verify_range

EXIT_NOT_INTACT, EXIT_USAGE, EXIT_UNKNOWN, EXIT_PURGING = 1, 2, 3, 4


def _archive(args: argparse.Namespace) -> Archive:
    given = {"AzureWebJobsStorage": args.connection_string} if args.connection_string else None
    # an auditor signs in as themselves (DefaultAzureCredential), never as the app's identity
    return Archive(table_service(storage_connection(given), own_identity=True), args.events_table, args.sessions_table)


def _purging(session: dict | None) -> str | None:
    return str(session[PURGE_FIELD]) if session and session.get(PURGE_FIELD) else None


def _being_deleted(call_id: str, since: str) -> int:
    print(
        f"call {call_id} is being deleted by retention (since {since}): its events are partly gone, "
        "and the next retention run finishes deleting it",
        file=sys.stderr,
    )
    return EXIT_PURGING


def _range_args(parser: argparse.ArgumentParser, required: bool) -> None:
    parser.add_argument("--from", dest="first", required=required, help="first UTC day, 2026-11-01 or 20261101")
    parser.add_argument("--to", dest="last", required=required, help="last UTC day (included)")


def _parser() -> argparse.ArgumentParser:
    events_table, sessions_table = archive_tables()
    p = argparse.ArgumentParser(
        prog="realtime-audit",
        description=(__doc__ or "").split("\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n".join((__doc__ or "").split("\n")[2:]),
    )
    # The storage options go before or after the subcommand alike: each subcommand takes them too,
    # without defaults of its own (SUPPRESS), so the top level's defaults stand unless given there.
    storage = argparse.ArgumentParser(add_help=False)
    for parser, defaults in ((p, (None, events_table, sessions_table)), (storage, (argparse.SUPPRESS,) * 3)):
        parser.add_argument(
            "--connection-string", default=defaults[0], help="storage connection string (default: AzureWebJobsStorage)"
        )
        parser.add_argument("--events-table", default=defaults[1])
        parser.add_argument("--sessions-table", default=defaults[2])
    sub = p.add_subparsers(dest="cmd", required=True)

    def command(name: str, **kwargs: Any) -> argparse.ArgumentParser:
        return sub.add_parser(name, parents=[storage], **kwargs)

    ss = command("sessions", help="the calls of a period, as a table (streamed page by page)")
    _range_args(ss, True)
    ss.add_argument("--origin", help="only calls from this exact Origin")
    ss.add_argument("--principal", help="only calls of this principal (name or id)")
    ss.add_argument("--ended-by", help=f"only calls that ended so ({', '.join(get_args(EndReason))})")
    ss.add_argument("--json", action="store_true", help="one JSON object per call, a line each")
    us = command("usage", help="usage and cost per UTC day, from the limits table (calls, minutes, tokens)")
    _range_args(us, True)
    us.add_argument("--principal", help="one principal's rows (its id, as in the session rows' principal_id)")
    us.add_argument("--json", action="store_true", help="one JSON object per day, a line each")
    us.add_argument("--limits-table", default=limits_table_name(), help="default: LIMITS_TABLE or gatewaylimits")
    ls = command("list", help="calls of one day (UTC)")
    ls.add_argument("--day", default=time.strftime("%Y%m%d", time.gmtime()))
    ls.add_argument("--json", action="store_true")
    sh = command("show", help="a call's summary and its conversation with times")
    sh.add_argument("call_id")
    sh.add_argument("--events", action="store_true", help="also print every event, one JSON line each")
    sh.add_argument("--json", action="store_true", help="the session row as JSON instead of the summary")
    sh.add_argument(
        "--conversation", action="store_true", help="every call of the CALL_ID's conversation, stitched in order"
    )
    ex = command("export", help="every event of a call (or of every call of a period), whole, in order")
    ex.add_argument("call_id", nargs="?")
    _range_args(ex, False)
    ex.add_argument("--format", choices=FORMATS, default="jsonl")
    ex.add_argument("-o", "--output", help="file (one call; default stdout) or folder (a period)")
    ex.add_argument(
        "--conversation", action="store_true", help="every call of the CALL_ID's conversation, first to last"
    )
    vf = command("verify", help="check the hash chain and the session head; exit 1 if not intact")
    vf.add_argument("call_id", nargs="?")
    _range_args(vf, False)
    vf.add_argument("--json", action="store_true")
    for name in ("report", "timeline"):
        rp = command(name, help="write the call as a self-contained HTML page")
        rp.add_argument("call_id")
        rp.add_argument("-o", "--output", help="file to write (default: call-<id>.html or conversation-<id>.html)")
        rp.add_argument(
            "--conversation", action="store_true", help="every call of the CALL_ID's conversation on one page"
        )
    return p


def _one_call_or_range(p: argparse.ArgumentParser, args: argparse.Namespace) -> tuple[str, str] | None:
    """(first, last) day keys for a range, None for a single call; usage errors exit 2."""
    if args.call_id and (args.first or args.last):
        p.error("give a CALL_ID or --from/--to, not both")
    if args.call_id:
        return None
    if not (args.first and args.last):
        p.error("give a CALL_ID, or both --from and --to")
    try:
        return day_range(args.first, args.last)
    except BadRange as exc:
        p.error(str(exc))
    raise AssertionError("unreachable")


def main(argv: Sequence[str] | None = None) -> int:
    """The command; a storage failure (no archive tables yet, storage unreachable, no access) is one
    line on stderr and exit code 2, never a traceback."""
    redact.install_record_factory()
    p = _parser()
    args = p.parse_args(argv)
    try:
        archive = _archive(args)
    except ValueError as exc:  # no storage configured, or a malformed connection string
        print(
            f"error: {exc if isinstance(exc, StorageConfigError) else 'the storage connection string is malformed'}",
            file=sys.stderr,
        )
        return 2
    try:
        return COMMANDS[args.cmd](p, args, archive)
    except AzureError as exc:
        code = getattr(exc, "error_code", None) or type(exc).__name__
        print(f"error: the archive cannot be read ({code})", file=sys.stderr)
        return 2


def _sessions(p: argparse.ArgumentParser, args: argparse.Namespace, archive: Archive) -> int:
    try:
        first, last = day_range(args.first, args.last)
    except BadRange as exc:
        p.error(str(exc))
    n = 0
    for page in list_calls(archive, first, last, origin=args.origin, principal=args.principal, ended_by=args.ended_by):
        lines = (json.dumps(s, default=str) for s in page) if args.json else format_table(page, header=n == 0)
        for line in lines:
            print(line)
        n += len(page)
    if not args.json:
        print(f"{n} call(s) from {first} to {last}")
    return 0


def _list(p: argparse.ArgumentParser, args: argparse.Namespace, archive: Archive) -> int:
    rows = sorted(archive.sessions_on(args.day), key=lambda r: str(r.get("created_at")))
    if args.json:
        print(json.dumps(rows, default=str, indent=2))
        return 0
    for line in format_table(map(call_summary, rows)):
        print(line)
    print(f"{len(rows)} call(s) on {args.day}")
    return 0


def _unknown(call_id: str) -> int:
    print(f"no call {call_id} in the archive", file=sys.stderr)
    return EXIT_UNKNOWN


def _show(args: argparse.Namespace, archive: Archive, session: dict[str, Any]) -> int:
    since = _purging(session)
    if args.json:
        print(dumps_row(session))
        return EXIT_PURGING if since else 0
    s = call_summary(session)
    print(f"Call {s['call_id']}")
    for key in ("start", "duration_s", "state", "ended_by", "end_detail", "origin", "principal", "events", "gaps"):
        if s[key] not in (None, ""):
            print(f"  {key:11} {s[key]}")
    for key in ("model", "voice", "attach_delay_ms", "continuations"):
        if session.get(key) not in (None, ""):
            print(f"  {key:11} {session[key]}")
    for key, value in s["usage"].items():
        if value:  # the counts the service reported; zeros left out
            print(f"  {key:11} {value}")
    if since:
        print(f"  BEING DELETED by retention since {since}: the events are partly gone, not shown")
        return _being_deleted(args.call_id, since)
    return _print_calls(args, [(session, list(archive.read_events(args.call_id)))], conversation=False)


def _event_line(rec: EventRecord, call_id: str | None = None) -> str:
    line: dict[str, Any] = {"call_id": call_id} if call_id else {}
    line.update(
        seq=rec.seq,
        received_at=rec.received_at,
        type=rec.event_type,
        event_id=rec.event_id,
        source=rec.source,
        event=rec.event(),
    )
    return json.dumps(line)


def _show_conversation(args: argparse.Namespace, archive: Archive) -> int:
    rows = conversation_calls(archive, args.call_id)
    deleting = [(str(r["call_id"]), since) for r in rows if (since := _purging(r))]
    if args.json:
        print(json.dumps(rows, default=str, indent=2))
        return EXIT_PURGING if deleting else 0
    print(f"Conversation {rows[0]['call_id']}: {len(rows)} call(s)")
    for n, row in enumerate(rows, 1):
        s = call_summary(row)
        duration = f"{s['duration_s']:.1f} s" if s["duration_s"] is not None else "-"
        print(
            f"  call {n}: {s['call_id']}  started {s['start']}  {duration}  ended by "
            f"{s['ended_by'] or s['state'] or '-'}  {s['events']} events"
        )
    if deleting:
        for call_id, since in deleting:
            print(f"  BEING DELETED by retention since {since}: call {call_id}'s events are partly gone, not shown")
        return _being_deleted(*deleting[0])
    return _print_calls(
        args, [(row, list(archive.read_events(str(row["call_id"])))) for row in rows], conversation=True
    )


def _print_calls(
    args: argparse.Namespace, calls: list[tuple[dict[str, Any], list[EventRecord]]], conversation: bool
) -> int:
    """`show`'s body: each turn's latency, the words, and with --events every event (a conversation's
    numbered by call, on the first call's clock, with each call's start marked)."""
    for t in conversation_turns(calls):
        call = f"call {t.call} " if conversation else ""
        print(f"  {call}turn {t.n}: {t.latency_ms:.0f} ms from {t.basis} to the first {t.reply}")
    clock = "the first call's first event" if conversation else "the first event"
    print(f"\nConversation (UTC time, seconds from {clock}):")
    lines = conversation_transcript(calls) if conversation else transcript(calls[0][1])
    for line in format_transcript(lines):
        print("  " + line)
    if args.events:
        for row, records in calls:
            for rec in records:
                print(_event_line(rec, str(row["call_id"]) if conversation else None))
    return 0


def _export(p: argparse.ArgumentParser, args: argparse.Namespace, archive: Archive) -> int:
    days = _one_call_or_range(p, args)
    if days is None:
        session = archive.find_session(args.call_id)
        if session is None:
            return _unknown(args.call_id)
        if since := _purging(session):
            return _being_deleted(args.call_id, since)
        calls = [str(c["call_id"]) for c in conversation_calls(archive, args.call_id)] if args.conversation else []
        n = export_call(archive, calls or [args.call_id], Path(args.output) if args.output else None, args.format)
        what = f"conversation {calls[0]} ({len(calls)} calls)" if len(calls) > 1 else args.call_id
        print(f"exported {n} events of {what}" + (f" to {args.output}" if args.output else ""), file=sys.stderr)
        return 0
    if not args.output:
        p.error("exporting a period needs -o DIR")
    done, skipped = export_range(archive, *days, Path(args.output), args.format)
    print(
        f"exported {len(done)} call(s), {sum(n for _, n in done)} events, to {args.output}"
        + (f"; skipped {len(skipped)} being deleted by retention" if skipped else ""),
        file=sys.stderr,
    )
    return EXIT_PURGING if skipped else 0


def _print_verdict(report: VerifyReport) -> None:
    if report.purging:
        print(
            f"PURGING {report.call_id}: being deleted by retention since {report.purging} "
            f"({report.events} event rows left); not verified"
        )
        return
    if report.ok:
        print(f"OK {report.call_id}: {report.events} rows, chain head {report.head}")
        return
    first = report.first
    assert first is not None
    print(f"FAILED {report.call_id}: {first.kind} row {first.row or '(session)'}: {first.message}")
    for finding in report.findings[1:]:
        print(f"  then: {finding.kind} {finding.row}: {finding.message}")


def _verify(p: argparse.ArgumentParser, args: argparse.Namespace, archive: Archive) -> int:
    days = _one_call_or_range(p, args)
    if days is None and archive.find_session(args.call_id) is None and not any(archive.read_events(args.call_id)):
        return _unknown(args.call_id)
    # a call of a conversation is verified with the conversation's every call and the links between them
    if days is None:
        reports: Iterable[VerifyReport] = verify_conversation(archive, args.call_id) or [
            verify_call(archive, args.call_id)
        ]
    else:
        reports = verify_range(archive, *days)
    failed = purging = total = 0
    for report in reports:
        total += 1
        purging += report.purging is not None
        failed += not report.ok and report.purging is None
        if args.json:
            print(json.dumps(report.to_json()))
        else:
            _print_verdict(report)
    if days is not None and not args.json:
        print(
            f"{total - failed - purging} of {total} call(s) intact from {days[0]} to {days[1]}"
            + (f", {purging} being deleted by retention (not verified)" if purging else "")
        )
    return EXIT_NOT_INTACT if failed else EXIT_PURGING if purging else 0


def _report(args: argparse.Namespace, archive: Archive, session: dict[str, Any]) -> int:
    if since := _purging(session):
        return _being_deleted(args.call_id, since)
    report = verify_call(archive, args.call_id, session)
    if since := report.purging:  # retention began while it was being verified
        return _being_deleted(args.call_id, since)
    page = render_timeline(session, list(archive.read_events(args.call_id)), report, prices_from_env())
    out = args.output or f"call-{args.call_id}.html"
    with open(out, "w", encoding="utf-8") as f:
        f.write(page)
    print(f"wrote {out} ({len(page)} bytes; chain {'verified' if report.ok else 'FAILED'})")
    return 0 if report.ok else EXIT_NOT_INTACT


def _report_conversation(args: argparse.Namespace, archive: Archive) -> int:
    rows = conversation_calls(archive, args.call_id)
    for row in rows:
        if since := _purging(row):
            return _being_deleted(str(row["call_id"]), since)
    reports = {r.call_id: r for r in verify_conversation(archive, args.call_id)}
    for report in reports.values():
        if report.purging:  # retention began while it was being verified
            return _being_deleted(report.call_id, report.purging)
    calls = []
    for row in rows:
        call_id = str(row["call_id"])
        found = reports.get(call_id) or VerifyReport(call_id, findings=[Finding("link", "", "not verified")])
        calls.append((row, list(archive.read_events(call_id)), found))
    page = render_conversation(calls, prices_from_env())
    out = args.output or f"conversation-{rows[0]['call_id']}.html"
    with open(out, "w", encoding="utf-8") as f:
        f.write(page)
    ok = all(report.ok for _, _, report in calls)
    print(f"wrote {out} ({len(page)} bytes; {len(calls)} calls; chains and links {'verified' if ok else 'FAILED'})")
    return 0 if ok else EXIT_NOT_INTACT


def _usage(p: argparse.ArgumentParser, args: argparse.Namespace, archive: Archive) -> int:
    try:
        first, last = day_range(args.first, args.last)
    except BadRange as exc:
        p.error(str(exc))
    if not valid_table_name(args.limits_table):
        p.error(f"--limits-table (LIMITS_TABLE) must match ^[A-Za-z][A-Za-z0-9]{{2,62}}$, got {args.limits_table!r}")
    try:
        days = list(day_usage(archive.service, args.limits_table, first, last, args.principal))
    except ResourceNotFoundError:
        print(f"error: no limits table {args.limits_table!r} (set LIMITS_TABLE or --limits-table)", file=sys.stderr)
        return EXIT_USAGE
    except AzureError as exc:
        code = getattr(exc, "error_code", None) or type(exc).__name__
        print(f"error: the limits table cannot be read ({code})", file=sys.stderr)
        return EXIT_USAGE
    if args.json:
        for d in days:
            print(json.dumps(d))
        return 0
    who = f"principal {args.principal}" if args.principal else "the whole app"
    span = f"{first[:4]}-{first[4:6]}-{first[6:]} to {last[:4]}-{last[4:6]}-{last[6:]}"
    print(f"Usage of {who} from {span} (UTC days; cost estimated at the prices set when charged)")
    for line in format_usage(days):
        print(line)
    return 0


def _one_call(
    single: Callable[[argparse.Namespace, Archive, dict[str, Any]], int],
    conversation: Callable[[argparse.Namespace, Archive], int],
) -> Callable[[argparse.ArgumentParser, argparse.Namespace, Archive], int]:
    """A command on the call named (its session row), or with --conversation on all its calls."""

    def command(p: argparse.ArgumentParser, args: argparse.Namespace, archive: Archive) -> int:
        session = archive.find_session(args.call_id)
        if session is None:
            return _unknown(args.call_id)
        return conversation(args, archive) if args.conversation else single(args, archive, session)

    return command


COMMANDS = {
    "sessions": _sessions,
    "usage": _usage,
    "list": _list,
    "show": _one_call(_show, _show_conversation),
    "export": _export,
    "verify": _verify,
    "report": _one_call(_report, _report_conversation),
    "timeline": _one_call(_report, _report_conversation),
}
