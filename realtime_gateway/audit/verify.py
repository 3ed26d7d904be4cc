"""Verify a call's archive: every row present, in order, unaltered, and matching the session head."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..archive.chain import genesis, link
from ..archive.codec import row_key
from ..archive.store import Archive


@dataclass
class VerifyReport:
    call_id: str
    events: int = 0
    head: str | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def verify_call(archive: Archive, call_id: str) -> VerifyReport:
    report = VerifyReport(call_id)
    prev, expected, service_events = genesis(call_id), 0, 0
    for rec in archive.read_events(call_id):
        if rec.seq != expected:
            report.problems.append(f"rows {row_key(expected)}..{row_key(rec.seq - 1)} missing (gap in sequence)")
        digest = link(prev, rec.seq, rec.event_id, rec.event_type, rec.received_at, rec.payload)
        if digest != rec.hash:
            report.problems.append(
                f"row {row_key(rec.seq)} ({rec.event_type}) does not match its hash: "
                "altered, or a row before it was removed"
            )
        if rec.missing_parts:
            report.problems.append(
                f"row {row_key(rec.seq)}: {abs(rec.missing_parts)} part rows "
                + ("missing" if rec.missing_parts > 0 else "more than it announces")
            )
        prev, expected = rec.hash, rec.seq + 1
        report.events += 1
        service_events += rec.source == "service"
    report.head = prev if report.events else None
    session = archive.find_session(call_id)
    if session is None:
        report.problems.append("no session row for this call")
        return report
    if session.get("head_hash") not in (None, "") and session.get("head_hash") != report.head:
        report.problems.append(
            f"the session's chain head ({str(session.get('head_hash'))[:12]}, row "
            f"{session.get('head_row')}) is not the last row's hash: rows removed at the end "
            "or rewritten"
        )
    if session.get("head_seq") is not None and int(session["head_seq"]) != expected - 1:
        report.problems.append(
            f"the session says the last row is {session.get('head_seq')}, the table ends at {expected - 1}"
        )
    if session.get("events") is not None and int(session["events"]) != service_events:
        report.problems.append(f"the session counts {session['events']} events, the table holds {service_events}")
    return report
