"""Archive retention: delete whole calls created more than ARCHIVE_RETENTION_DAYS ago.

A call goes in one order (`Archive.delete_call`): a `purging` row naming it and `purge_started_at`
on its session row, then its event rows (in transactions of 100), its session row, its index row
and the `purging` row. From the first step on, every reader reports the call as being deleted by
retention, never as altered; a run cut short anywhere (time box, storage error, scale-in) leaves
the `purging` row, and the next run finishes those calls first, whatever the setting is by then.
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
    cutoff: str | None  # ISO time: calls created before it were deleted (None: retention is off)
    calls: list[str] = field(default_factory=list)
    event_rows: int = 0
    resumed: int = 0  # calls whose deletion an earlier run began and this one finished


def purge(archive: Archive, days: int, now: datetime | None = None, max_calls: int = 500) -> RetentionResult | None:
    """Finish the deletions earlier runs began, then delete calls past the limit, up to `max_calls`
    calls in all (the rest go on the next run). None when days == 0 and nothing was left to finish."""
    now = now or datetime.now(UTC)
    since = now.isoformat(timespec="seconds")
    cutoff = now - timedelta(days=days) if days > 0 else None
    result = RetentionResult(cutoff.isoformat(timespec="seconds") if cutoff else None)
    for pending in archive.pending_deletions():
        if len(result.calls) >= max_calls:
            break
        call_id, day = pending["call_id"], str(pending["day"])
        rows = archive.delete_call(call_id, day, str(pending["started_at"] or since))
        result.calls.append(call_id)
        result.event_rows += rows
        result.resumed += 1
        log.info(
            "archive retention: finished deleting call %s of %s, begun %s (%d event rows)",
            call_id,
            day,
            pending["started_at"],
            rows,
        )
    if cutoff is None:
        log.info("archive retention: ARCHIVE_RETENTION_DAYS=0, keeping every call")
        return result if result.calls else None
    for session in archive.sessions_between(EARLIEST_DAY, cutoff.strftime("%Y%m%d")):
        if len(result.calls) >= max_calls:
            break
        created = _created(session)
        if created is not None and created >= cutoff:
            continue  # the cutoff's own day: only the calls created before the cutoff time
        call_id = str(session.get("call_id") or session["RowKey"])
        rows = archive.delete_call(call_id, str(session["PartitionKey"]), since)
        result.calls.append(call_id)
        result.event_rows += rows
        log.info("archive retention: deleted call %s of %s (%d event rows)", call_id, session["PartitionKey"], rows)
    log.info(
        "archive retention: %d calls created before %s deleted (%d event rows%s)",
        len(result.calls),
        result.cutoff,
        result.event_rows,
        f"; {result.resumed} of them begun by an earlier run" if result.resumed else "",
    )
    return result


def _created(session: dict) -> datetime | None:
    try:
        return datetime.fromisoformat(str(session.get("created_at")))
    except ValueError:
        return None  # a session row without a start time: its day is past the limit, so it goes
