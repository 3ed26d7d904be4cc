"""Time as the archive and the limits write it: ISO 8601 UTC, and the UTC day a time falls on."""

from __future__ import annotations

from datetime import UTC, datetime


def utc_iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="microseconds")


def day_of(ts: float) -> str:
    """YYYYMMDD (UTC): the session rows' partition and the limits' day rows."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y%m%d")
