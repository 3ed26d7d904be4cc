"""Archive retention: delete whole calls created more than ARCHIVE_RETENTION_DAYS ago.

A call goes in one order: its event rows (in transactions of 100), its index row, then its session
row. The session row is what the next run lists by day, so a run cut short anywhere (time box,
storage error, scale-in) leaves a call the next run finds and finishes; no reader ever sees a
session row whose events are partly gone without that call being next in line for deletion.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from .store import Archive

log = logging.getLogger(__name__)
EARLIEST_DAY = "19700101"


@dataclass
class RetentionResult:
    cutoff: str  # ISO time: calls created before it were deleted
    calls: list[str] = field(default_factory=list)
    event_rows: int = 0


def purge(archive: Archive, days: int, now: datetime | None = None, max_calls: int = 500) -> RetentionResult | None:
    """Delete up to `max_calls` calls past the limit (the rest go on the next run). None when days == 0."""
    if days <= 0:
        log.info("archive retention: ARCHIVE_RETENTION_DAYS=0, keeping every call")
        return None
    cutoff = (now or datetime.now(UTC)) - timedelta(days=days)
    result = RetentionResult(cutoff.isoformat(timespec="seconds"))
    for session in archive.sessions_between(EARLIEST_DAY, cutoff.strftime("%Y%m%d")):
        if len(result.calls) >= max_calls:
            break
        created = _created(session)
        if created is not None and created >= cutoff:
            continue  # the cutoff's own day: only the calls created before the cutoff time
        call_id = str(session.get("call_id") or session["RowKey"])
        rows = archive.delete_call(call_id, str(session["PartitionKey"]))
        result.calls.append(call_id)
        result.event_rows += rows
        log.info("archive retention: deleted call %s of %s (%d event rows)", call_id, session["PartitionKey"], rows)
    log.info(
        "archive retention: %d calls created before %s deleted (%d event rows)",
        len(result.calls),
        result.cutoff,
        result.event_rows,
    )
    return result


def _created(session: dict) -> datetime | None:
    try:
        return datetime.fromisoformat(str(session.get("created_at")))
    except ValueError:
        return None  # a session row without a start time: its day is past the limit, so it goes
