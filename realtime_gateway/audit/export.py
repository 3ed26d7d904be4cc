"""Take whole calls out of the archive: every event in order, split payloads joined, exactly once.

jsonl: one archived event per line, exactly the JSON text the service sent (listener marks are
their own `{"type": "listener.gap", ...}` objects). csv: a row per event with its sequence, time,
type, event id, source and payload.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path
from typing import IO, Callable, Iterable

from ..archive.codec import EventRecord
from ..archive.store import PURGE_FIELD, Archive

FORMATS = ("jsonl", "csv")
CSV_COLUMNS = ("seq", "received_at", "type", "event_id", "source", "payload")
PROGRESS_EVERY = 1000  # events between progress lines on long exports


def jsonl_line(rec: EventRecord) -> str:
    # JSON text never needs a raw newline; a payload pretty-printed upstream is compacted, not cut.
    if "\n" in rec.payload or "\r" in rec.payload:
        return json.dumps(json.loads(rec.payload), ensure_ascii=False, separators=(",", ":"))
    return rec.payload


def write_events(
    records: Iterable[EventRecord], out: IO[str], fmt: str, progress: Callable[[int, int], None] | None = None
) -> int:
    """Write every record to `out`; returns how many. `progress(events, chars)` every 1000 events."""
    writer = csv.writer(out, lineterminator="\n") if fmt == "csv" else None
    if writer:
        writer.writerow(CSV_COLUMNS)
    n = chars = 0
    for rec in records:
        if writer:
            writer.writerow((rec.seq, rec.received_at, rec.event_type, rec.event_id, rec.source, rec.payload))
        else:
            out.write(jsonl_line(rec) + "\n")
        n += 1
        chars += len(rec.payload)
        if progress and n % PROGRESS_EVERY == 0:
            progress(n, chars)
    return n


def stderr_progress(call_id: str) -> Callable[[int, int], None]:
    def report(events: int, chars: int) -> None:
        print(f"  {call_id}: {events} events, {chars / 1e6:.1f} M characters", file=sys.stderr, flush=True)

    return report


def export_call(archive: Archive, call_ids: list[str], path: Path | None, fmt: str) -> int:
    """The calls' events, one call after the other (a conversation's, first to last), to `path`
    (stdout when None)."""
    call_id = call_ids[0]
    records = (rec for c in call_ids for rec in archive.read_events(c))
    if path is None:
        return write_events(records, sys.stdout, fmt, stderr_progress(call_id))
    with open(path, "w", encoding="utf-8", newline="") as f:
        return write_events(records, f, fmt, stderr_progress(call_id))


def export_range(
    archive: Archive, first_day: str, last_day: str, folder: Path, fmt: str
) -> tuple[list[tuple[str, int]], list[str]]:
    """Every call of the days into `folder`: `<call id>.<fmt>` each, and `sessions.jsonl` (the rows).
    Returns (call id, events) of each call exported, and the calls skipped: retention is deleting
    them, so their events are partly gone."""
    folder.mkdir(parents=True, exist_ok=True)
    done: list[tuple[str, int]] = []
    skipped: list[str] = []
    with open(folder / "sessions.jsonl", "w", encoding="utf-8") as index:
        for session in archive.sessions_between(first_day, last_day):
            call_id = str(session.get("call_id") or session.get("RowKey"))
            if session.get(PURGE_FIELD):
                print(f"skipped {call_id}: being deleted by retention", file=sys.stderr, flush=True)
                skipped.append(call_id)
                continue
            index.write(json.dumps(session, default=str, sort_keys=True) + "\n")
            n = export_call(archive, [call_id], folder / f"{call_id}.{fmt}", fmt)
            print(f"exported {call_id}: {n} events", file=sys.stderr, flush=True)
            done.append((call_id, n))
    return done, skipped
