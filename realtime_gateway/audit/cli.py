"""The auditor's command: list calls by day, show a call, verify its hash chain, render its report.

    python -m realtime_gateway.audit list [--day YYYYMMDD]
    python -m realtime_gateway.audit show CALL_ID [--events]
    python -m realtime_gateway.audit verify CALL_ID          (exit 1 when the chain does not verify)
    python -m realtime_gateway.audit timeline CALL_ID [-o call.html]

Storage comes from AzureWebJobsStorage (connection string) or AzureWebJobsStorage__tableServiceUri
(signed-in identity via DefaultAzureCredential), or --connection-string.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Sequence

from azure.core.exceptions import AzureError

from .. import redact
from ..archive.store import Archive
from ..archive.tables import table_service_from_env
from ..settings import archive_tables
from .report import dumps_row, render_timeline
from .verify import verify_call


def _archive(args: argparse.Namespace) -> Archive:
    env = dict(os.environ)
    if args.connection_string:
        env["AzureWebJobsStorage"] = args.connection_string
    # an auditor signs in as themselves (DefaultAzureCredential), never as the app's identity
    return Archive(table_service_from_env(env, own_identity=True), args.events_table, args.sessions_table)


def main(argv: Sequence[str] | None = None) -> int:
    """The command; a storage failure (no archive tables yet, storage unreachable, no access) is one
    line on stderr and exit code 2, never a traceback."""
    redact.install_record_factory()
    events_table, sessions_table = archive_tables()
    p = argparse.ArgumentParser(prog="python -m realtime_gateway.audit", description=(__doc__ or "").split("\n")[0])
    p.add_argument("--connection-string", help="storage connection string (default: AzureWebJobsStorage)")
    p.add_argument("--events-table", default=events_table)
    p.add_argument("--sessions-table", default=sessions_table)
    sub = p.add_subparsers(dest="cmd", required=True)
    ls = sub.add_parser("list", help="calls of one day (UTC)")
    ls.add_argument("--day", default=time.strftime("%Y%m%d", time.gmtime()))
    ls.add_argument("--json", action="store_true")
    sh = sub.add_parser("show", help="a call's session row (and events)")
    sh.add_argument("call_id")
    sh.add_argument("--events", action="store_true", help="also print every event, one JSON line each")
    vf = sub.add_parser("verify", help="check the hash chain and the session head")
    vf.add_argument("call_id")
    tl = sub.add_parser("timeline", help="write the call as a self-contained HTML page")
    tl.add_argument("call_id")
    tl.add_argument("-o", "--output", help="file to write (default: call-<id>.html)")
    args = p.parse_args(argv)
    try:
        return _run(args, _archive(args))
    except AzureError as exc:
        code = getattr(exc, "error_code", None) or type(exc).__name__
        print(f"error: the archive cannot be read ({code})", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace, archive: Archive) -> int:

    if args.cmd == "list":
        rows = sorted(archive.sessions_on(args.day), key=lambda r: str(r.get("created_at")))
        if args.json:
            print(json.dumps(rows, default=str, indent=2))
            return 0
        print(f"{'created (UTC)':27} {'call id':34} {'state':8} {'ended by':9} {'events':>6} origin / principal")
        for r in rows:
            print(
                f"{str(r.get('created_at', ''))[:26]:27} {r['call_id']:34} {str(r.get('state')):8} "
                f"{str(r.get('end_reason') or ''):9} {int(r.get('events') or 0):>6} "
                f"{r.get('origin') or '-'} / {r.get('principal_name') or r.get('principal_id') or '-'}"
            )
        print(f"{len(rows)} call(s) on {args.day}")
        return 0
    if args.cmd == "show":
        session = archive.find_session(args.call_id)
        if session is None:
            print(f"no call {args.call_id} in the archive", file=sys.stderr)
            return 2
        print(dumps_row(session))
        if args.events:
            for rec in archive.read_events(args.call_id):
                print(
                    json.dumps(
                        {
                            "seq": rec.seq,
                            "received_at": rec.received_at,
                            "type": rec.event_type,
                            "event_id": rec.event_id,
                            "source": rec.source,
                            "event": rec.event(),
                        }
                    )
                )
        return 0
    if args.cmd == "verify":
        report = verify_call(archive, args.call_id)
        if report.ok:
            print(f"OK: {report.events} rows, chain head {report.head}")
            return 0
        print(f"FAILED: {args.call_id}", *report.problems, sep="\n  ")
        return 1
    if args.cmd == "timeline":
        report = verify_call(archive, args.call_id)
        page = render_timeline(archive.find_session(args.call_id), list(archive.read_events(args.call_id)), report)
        out = args.output or f"call-{args.call_id}.html"
        with open(out, "w", encoding="utf-8") as f:
            f.write(page)
        print(f"wrote {out} ({len(page)} bytes; chain {'verified' if report.ok else 'FAILED'})")
        return 0 if report.ok else 1
    return 2
