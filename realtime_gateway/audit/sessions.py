"""A period's calls as an auditor lists them: one summary line per call, filtered, in pages.

Usage and cost come from the `usage_*` and `cost*` fields the session row carries (the listener
sums the usage the service reports; the limits' accounting writes `cost_usd`); `usage` keeps every
such field as stored, `tokens` and `cost_usd` are the two the table shows.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Iterable, Iterator, Mapping

from ..archive.store import PURGE_FIELD, Archive
from ..core import usage as usage_


def is_usage_field(name: str) -> bool:
    return name.startswith("usage_") or name.startswith("cost") or name == "estimated_cost"


def usage_fields(session: Mapping[str, Any]) -> dict[str, Any]:
    return {k: session[k] for k in sorted(session) if is_usage_field(k) and session[k] not in (None, "")}


def duration_seconds(session: Mapping[str, Any]) -> float | None:
    try:
        start = datetime.fromisoformat(str(session.get("created_at")))
        end = datetime.fromisoformat(str(session.get("ended_at")))
    except ValueError:
        return None
    return round((end - start).total_seconds(), 3)


def call_summary(session: Mapping[str, Any]) -> dict[str, Any]:
    """The columns of the calls table (and of the audit API's list), from one session row."""
    return {
        "call_id": session.get("call_id") or session.get("RowKey"),
        "day": session.get("PartitionKey"),
        "start": session.get("created_at"),
        "duration_s": duration_seconds(session),
        "state": session.get("state"),
        "ended_by": session.get("end_reason") or None,
        "end_detail": session.get("end_detail") or None,
        "events": int(session.get("events") or 0),
        "gaps": int(session.get("gaps") or 0),
        "origin": session.get("origin") or None,
        "principal": session.get("principal_name") or session.get("principal_id") or None,
        "principal_id": session.get("principal_id") or None,
        "tokens": int(usage_.budget_tokens(usage_.from_row(session))),
        "cost_usd": _number(session.get("cost_usd")),
        "usage": usage_fields(session),
        "purging_since": session.get(PURGE_FIELD) or None,  # retention is deleting this call
    }


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def matches(
    summary: Mapping[str, Any], origin: str | None = None, principal: str | None = None, ended_by: str | None = None
) -> bool:
    if origin is not None and (summary["origin"] or "") != origin:
        return False
    if principal is not None and principal.lower() not in {
        str(summary["principal"] or "").lower(),
        str(summary["principal_id"] or "").lower(),
    }:
        return False
    return ended_by is None or (summary["ended_by"] or "") == ended_by


def list_calls(
    archive: Archive, first_day: str, last_day: str, **filters: str | None
) -> Iterator[list[dict[str, Any]]]:
    """Pages of call summaries (a page per archive page, each sorted by start), filtered."""
    token = None
    while True:
        rows, token = archive.session_page(first_day, last_day, 200, token)
        page = [s for s in map(call_summary, rows) if matches(s, **filters)]
        if page:
            yield sorted(page, key=lambda s: str(s["start"]))
        if not token:
            return


def format_table(summaries: Iterable[Mapping[str, Any]], header: bool = True) -> Iterator[str]:
    if header:
        yield (
            f"{'start (UTC)':26} {'duration':>9} {'ended by':9} {'events':>6} {'gaps':>4} {'tokens':>8} "
            f"{'cost USD':>9} {'call id':34} origin / principal"
        )
    for s in summaries:
        duration = f"{s['duration_s']:.1f} s" if s["duration_s"] is not None else "-"
        cost = f"{s['cost_usd']:.4f}" if s.get("cost_usd") is not None else "-"
        ended = "PURGING" if s.get("purging_since") else str(s["ended_by"] or s["state"] or "")
        yield (
            f"{str(s['start'] or '')[:26]:26} {duration:>9} {ended:9} {s['events']:>6} {s['gaps']:>4} "
            f"{s.get('tokens') or 0:>8} {cost:>9} {str(s['call_id']):34} {s['origin'] or '-'} / {s['principal'] or '-'}"
            + (f" / being deleted by retention since {s['purging_since']}" if s.get("purging_since") else "")
        )
