"""Verify a call's archive: every row present, in order, unaltered, and matching the session head.

Each finding names a row and says what happened to it: `altered` (its content no longer hashes to
its link), `missing` (a sequence number, a part row or the tail is gone), `extra` (a row that was
never written by the listener: a duplicate, one inserted in the middle with the rest shifted, or
one appended after the session's head) or `reordered` (rows swapped or moved).

A call retention is deleting (`purge_started_at` on its session row) is not checked: its rows are
going, and the report says so (`purging`) instead of naming missing rows.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Iterator

from ..archive.chain import genesis, link
from ..archive.codec import EventRecord, row_key
from ..archive.store import PURGE_FIELD, Archive

CANONICAL_KEY = re.compile(r"^\d{10}$")


@dataclass(frozen=True)
class Finding:
    kind: str  # altered | missing | extra | reordered | session
    row: str  # the RowKey it concerns ("" for the session row)
    message: str


@dataclass
class VerifyReport:
    call_id: str
    events: int = 0
    head: str | None = None
    findings: list[Finding] = field(default_factory=list)
    purging: str | None = None  # retention has been deleting the call since then: not verified

    @property
    def ok(self) -> bool:
        return not self.findings and self.purging is None

    @property
    def problems(self) -> list[str]:
        return [f.message for f in self.findings]

    @property
    def first(self) -> Finding | None:
        return self.findings[0] if self.findings else None

    def to_json(self) -> dict:
        return {
            "call_id": self.call_id,
            "ok": self.ok,
            "rows": self.events,
            "head": self.head,
            "findings": [f.__dict__ for f in self.findings],
            "purging": self.purging,
        }


def _digest(prev: str, seq: int, rec: EventRecord) -> str:
    return link(prev, seq, rec.event_id, rec.event_type, rec.received_at, rec.payload)


def _pairs(records: Iterator[EventRecord]) -> Iterator[tuple[EventRecord, EventRecord | None]]:
    """Each record with the one after it (the checks look one row ahead)."""
    rec = next(records, None)
    while rec is not None:
        nxt = next(records, None)
        yield rec, nxt
        rec = nxt


def verify_call(archive: Archive, call_id: str, session: dict | None = None) -> VerifyReport:
    """`session`: the call's session row when the caller has it (a period's listing)."""
    session = session if session is not None else archive.find_session(call_id)
    if session is not None and session.get(PURGE_FIELD):
        return _purging(archive, call_id, str(session[PURGE_FIELD]))
    report = _check_chain(archive, call_id)
    if report.findings:  # retention may have begun deleting it while the rows were read
        again = archive.find_session(call_id)
        if again is not None and again.get(PURGE_FIELD):
            return _purging(archive, call_id, str(again[PURGE_FIELD]))
    return report


def _purging(archive: Archive, call_id: str, since: str) -> VerifyReport:
    return VerifyReport(call_id, events=len(archive.event_index(call_id)), purging=since)


def _check_chain(archive: Archive, call_id: str) -> VerifyReport:
    report = VerifyReport(call_id)
    add = report.findings.append
    prev, expected, service_events = genesis(call_id), 0, 0
    before = ""  # the link before `prev`: a row chained there sits one place after where it belongs
    seen: set[int] = set()
    shift = 0  # rows after an inserted one carry seq + 1 but still their original hash
    skip_next = False
    for rec, nxt in _pairs(iter(archive.read_events(call_id))):
        report.events += 1
        service_events += rec.source == "service"
        if skip_next:  # the second row of a swapped pair, already reported
            skip_next, expected = False, rec.seq + 1
            seen.add(rec.seq)
            continue
        seq = rec.seq - shift
        if not CANONICAL_KEY.match(rec.row) or rec.seq in seen:
            add(
                Finding("extra", rec.row, f"row {rec.row} is extra: not a sequence row, or it repeats event #{rec.seq}")
            )
            continue
        if rec.row != row_key(rec.seq):
            add(Finding("reordered", rec.row, f"row {rec.row} holds event #{rec.seq}: rows were reordered"))
        elif seq > expected:
            add(
                Finding(
                    "missing",
                    row_key(expected),
                    f"rows {row_key(expected)}..{row_key(seq - 1)} are missing (the sequence jumps to {rec.row})",
                )
            )
        elif _digest(prev, seq, rec) != rec.hash:
            if before and _digest(before, seq - 1, rec) == rec.hash:
                inserted = row_key(rec.seq - 1)
                add(
                    Finding(
                        "extra",
                        inserted,
                        f"row {inserted} was inserted: the rows from {rec.row} on hold the events that belong "
                        "one place earlier",
                    )
                )
                shift += 1
                seen.add(rec.seq)
                before, prev, expected = prev, rec.hash, seq
                continue
            follows = nxt is not None and _digest(prev, seq, nxt) == nxt.hash
            if follows and nxt is not None and _digest(nxt.hash, seq + 1, rec) == rec.hash:
                add(Finding("reordered", rec.row, f"rows {rec.row} and {nxt.row} were swapped"))
                prev, skip_next = rec.hash, True
                seen.add(rec.seq)
                continue
            if follows:
                add(
                    Finding(
                        "extra",
                        rec.row,
                        f"row {rec.row} ({rec.event_type}) was inserted: the row after it holds the event "
                        "that belongs here, and the rest are shifted by one",
                    )
                )
                shift += 1
                seen.add(rec.seq)
                continue
            add(
                Finding(
                    "altered",
                    rec.row,
                    f"row {rec.row} ({rec.event_type}) does not match its hash: its content was altered",
                )
            )
        if rec.missing_parts:
            add(
                Finding(
                    "missing" if rec.missing_parts > 0 else "extra",
                    rec.row,
                    f"row {rec.row}: {abs(rec.missing_parts)} part rows "
                    + ("missing" if rec.missing_parts > 0 else "more than it announces"),
                )
            )
        seen.add(rec.seq)
        before, prev, expected = prev, rec.hash, max(expected, seq + 1)
    report.head = prev if report.events else None
    _check_session(archive, report, expected - 1, service_events)
    return report


def _check_session(archive: Archive, report: VerifyReport, last: int, service_events: int) -> None:
    add = report.findings.append
    session = archive.find_session(report.call_id)
    if session is None:
        add(Finding("session", "", "no session row for this call"))
        return
    head_seq = session.get("head_seq")
    if head_seq is not None and int(head_seq) != last:
        head = int(head_seq)
        if last > head:
            add(
                Finding(
                    "extra",
                    row_key(head + 1),
                    f"rows {row_key(head + 1)}..{row_key(last)} are extra: the session's chain head is row {row_key(head)}",
                )
            )
        else:
            add(
                Finding(
                    "missing",
                    row_key(last + 1),
                    f"rows {row_key(last + 1)}..{row_key(head)} are missing at the end: the session's chain head is "
                    f"row {row_key(head)}",
                )
            )
    elif session.get("head_hash") not in (None, "") and session.get("head_hash") != report.head:
        add(
            Finding(
                "altered",
                str(session.get("head_row") or ""),
                f"the session's chain head ({str(session.get('head_hash'))[:12]}, row {session.get('head_row')}) "
                "is not the last row's hash: the rows were rewritten",
            )
        )
    if session.get("events") is not None and int(session["events"]) != service_events:
        add(Finding("session", "", f"the session counts {session['events']} events, the table holds {service_events}"))


def verify_range(archive: Archive, first_day: str, last_day: str) -> Iterator[VerifyReport]:
    for session in archive.sessions_between(first_day, last_day):
        yield verify_call(archive, str(session.get("call_id") or session.get("RowKey")), session)


def conversation_calls(archive: Archive, call_id: str) -> list[dict]:
    """The session rows of the conversation `call_id` belongs to, first call to last: back through
    `continues`, forward through `continued_by` (a call that was never continued is a conversation of one)."""
    row = archive.find_session(call_id)
    if row is None:
        return []
    seen = {call_id}
    while row.get("continues") and row["continues"] not in seen:
        earlier = archive.find_session(row["continues"])
        if earlier is None:
            break
        seen.add(row["continues"])
        row = earlier
    calls = [row]
    seen = {str(row["call_id"])}
    while (nxt := str(row.get("continued_by") or "")) and not nxt.startswith("pending:") and nxt not in seen:
        later = archive.find_session(nxt)
        if later is None:
            break
        seen.add(nxt)
        calls.append(later)
        row = later
    return calls


def verify_conversation(archive: Archive, call_id: str) -> list[VerifyReport]:
    """Each call's chain, and the links between the calls: each one continues the one before it,
    which names it as its successor, and all carry the first call's id as their conversation."""
    calls = conversation_calls(archive, call_id)
    reports = []
    first = str(calls[0]["call_id"]) if calls else call_id
    for n, row in enumerate(calls):
        report = verify_call(archive, str(row["call_id"]), row)
        if n and (
            row.get("continues") != calls[n - 1]["call_id"] or calls[n - 1].get("continued_by") != row["call_id"]
        ):
            report.findings.append(
                Finding(
                    "link", "", f"call {row['call_id']} is not linked to the call before it, {calls[n - 1]['call_id']}"
                )
            )
        if n == 0 and row.get("continues"):
            report.findings.append(Finding("link", "", f"the call it continues, {row['continues']}, is missing"))
        if str(row.get("conversation_id") or row["call_id"]) != first:
            report.findings.append(Finding("link", "", f"call {row['call_id']} names another conversation"))
        reports.append(report)
    return reports
