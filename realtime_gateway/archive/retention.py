"""Archive retention: delete whole calls created more than ARCHIVE_RETENTION_DAYS ago.

A call goes in one order (`Archive.delete_call`): a `purging` row naming it and `purge_started_at`
on its session row, then its event rows (in transactions of 100), its session row, its index row
and the `purging` row. From the first step on, every reader reports the call as being deleted by
retention, never as altered; a run cut short anywhere (time box, storage error, scale-in) leaves
the `purging` row, and the next run finishes those calls first, whatever the setting is by then.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from .store import Archive

log = logging.getLogger(__name__)
EARLIEST_DAY = "19700101"
RUN_SECONDS = 240.0  # well inside the 5-minute function timeout of a Consumption plan


@dataclass
class RetentionResult:
    cutoff: str | None  # ISO time: calls created before it were deleted (None: retention is off)
    calls: list[str] = field(default_factory=list)
    event_rows: int = 0
    resumed: int = 0  # calls whose deletion an earlier run began and this one finished
    more: bool = False  # stopped by its time or count: the next run goes on


def purge(
    archive: Archive,
    days: int,
    now: datetime | None = None,
    max_calls: int | None = None,
    seconds: float = RUN_SECONDS,
) -> RetentionResult | None:
    """Finish the deletions earlier runs began, then delete calls past the limit, until none is left,
    `seconds` have passed (inside the function's timeout) or `max_calls` calls went: the rest go on
    the next run, an hour later. None when days == 0 and nothing was left to finish."""
    now = now or datetime.now(UTC)
    stop_at = time.monotonic() + seconds
    limit = max_calls if max_calls is not None else float("inf")

    def full() -> bool:
        return len(result.calls) >= limit or time.monotonic() >= stop_at

    since = now.isoformat(timespec="seconds")
    cutoff = now - timedelta(days=days) if days > 0 else None
    result = RetentionResult(cutoff.isoformat(timespec="seconds") if cutoff else None)
    for pending in archive.pending_deletions():
        if full():
            result.more = True
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
        if full():
            result.more = True
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
    if result.more:
        log.warning("archive retention: more calls are past the limit; the next run goes on with them")
    return result


def _created(session: dict) -> datetime | None:
    try:
        return datetime.fromisoformat(str(session.get("created_at")))
    except ValueError:
        return None  # a session row without a start time: its day is past the limit, so it goes
