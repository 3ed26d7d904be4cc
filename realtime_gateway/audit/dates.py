"""Date ranges as auditors type them (2026-11-01 or 20261101) turned into the archive's day keys."""

from __future__ import annotations

from datetime import date, datetime, timedelta


class BadRange(ValueError):
    """A date that does not parse, a range that ends before it starts, or one too long."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def parse_day(text: str, name: str = "date") -> date:
    value = (text or "").strip()
    for fmt in ("%Y-%m-%d", "%Y%m%d"):
        try:
            return datetime.strptime(value, fmt).date()
        except ValueError:
            continue
    raise BadRange("invalid_date", f"{name} must be a UTC day like 2026-11-01 or 20261101, got {value!r}")


def day_range(first: str, last: str, max_days: int | None = None) -> tuple[str, str]:
    """(first day, last day) as `YYYYMMDD` partition keys, both included."""
    start, end = parse_day(first, "from"), parse_day(last, "to")
    if end < start:
        raise BadRange("invalid_range", f"to ({end}) is before from ({start})")
    days = (end - start).days + 1
    if max_days is not None and days > max_days:
        raise BadRange("range_too_long", f"the range covers {days} days; at most {max_days} per request")
    return start.strftime("%Y%m%d"), end.strftime("%Y%m%d")


def days_ago(today: date, n: int) -> str:
    return (today - timedelta(days=n)).strftime("%Y%m%d")
