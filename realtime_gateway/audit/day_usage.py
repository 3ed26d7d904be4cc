"""A period's usage and cost per UTC day, read from the limits table the limiter keeps.

Rows `usage-<YYYYMMDD>` / `app` (the whole app) or `p-<principal id>`: the day's `usage_*` token
sums, `calls` ended, `call_seconds` and `cost_usd` (limits/limiter.py, `Limiter.charge`). Read only.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Iterable, Iterator, Mapping

from azure.data.tables import TableServiceClient

from ..core import usage as usage_
from ..limits.client_key import principal_key
from ..limits.limiter import USAGE_PREFIX, usage_rows
from ..settings import TABLE_NAME, Limits, SettingsError, limits_settings

# (column heading, usage field): the token kinds the text table shows; --json carries every field
COLUMNS = (
    ("tokens", None),
    ("in text", "input_text_tokens"),
    ("in audio", "input_audio_tokens"),
    ("cached", "input_cached_tokens"),
    ("out text", "output_text_tokens"),
    ("out audio", "output_audio_tokens"),
    ("transcr.", None),  # tokens, and seconds of audio for minute-billed models
)


def _limits(env: Mapping[str, str] | None) -> Limits:
    """The app's own reading of its limits settings; their defaults when they would not load (the
    app itself would not start then, so nothing was priced with them)."""
    try:
        return limits_settings(env)
    except SettingsError:
        return Limits()


def limits_table_name(env: Mapping[str, str] | None = None) -> str:
    """LIMITS_TABLE as the app reads it, default `gatewaylimits`."""
    return _limits(env).table


def prices_from_env(env: Mapping[str, str] | None = None) -> dict[str, float]:
    """The PRICE_* settings as the app reads them, the list prices where unset."""
    return dict(_limits(env).prices)


def valid_table_name(name: str) -> bool:
    return bool(TABLE_NAME.match(name))


def row_key_of(principal: str | None) -> str:
    """The limiter's row key: `app`, or `p-<id>` as `limits.client_key.principal_key` makes it."""
    return (principal_key({"id": principal}) if principal else None) or "app"


def day_usage(
    service: TableServiceClient, table: str, first_day: str, last_day: str, principal: str | None = None
) -> Iterator[dict[str, Any]]:
    """One summary per day that has a row, oldest first (days without calls have none)."""
    for row in usage_rows(service.get_table_client(table), first_day, last_day, row_key_of(principal)):
        yield summary(row, principal)


def summary(row: Mapping[str, Any], principal: str | None = None) -> dict[str, Any]:
    day = str(row["PartitionKey"])[len(USAGE_PREFIX) :]
    used = usage_.from_row(row)
    seconds = float(row.get("call_seconds") or 0)
    return {
        "day": datetime.strptime(day, "%Y%m%d").strftime("%Y-%m-%d"),
        "principal": principal,
        "calls": int(row.get("calls") or 0),
        "call_seconds": seconds,
        "minutes": round(seconds / 60, 2),
        "tokens": int(usage_.budget_tokens(used)),
        "usage": {name: used.get(name, 0) for name in usage_.FIELDS},
        "cost_usd": float(row.get("cost_usd") or 0),
    }


def _cells(d: Mapping[str, Any]) -> list[str]:
    u = d["usage"]
    transcription = u["transcription_input_tokens"] + u["transcription_output_tokens"]
    cells = [f"{d['calls']}", f"{d['minutes']:.1f}", f"{d['tokens']}"]
    cells += [f"{int(u[name])}" for _, name in COLUMNS if name]
    seconds = u["transcription_seconds"]
    parts = ([f"{int(transcription)}"] if transcription or not seconds else []) + (
        [f"{seconds:.0f} s"] if seconds else []
    )
    cells.append(" + ".join(parts))  # token-billed and minute-billed transcription models
    return cells + [f"{d['cost_usd']:.4f}"]


def format_usage(days: Iterable[Mapping[str, Any]]) -> Iterator[str]:
    """The per-day table, then a total line (calls counts calls that ended that day)."""
    heads = ["day", "calls", "minutes", *(h for h, _ in COLUMNS), "cost USD"]
    widths = [10, 6, 8, 10, 9, 9, 8, 9, 10, 10, 10]
    yield " ".join(h.rjust(w) if i else h.ljust(w) for i, (h, w) in enumerate(zip(heads, widths, strict=True)))
    total: dict[str, Any] = {"calls": 0, "call_seconds": 0.0, "tokens": 0, "cost_usd": 0.0}
    total["usage"] = dict.fromkeys(usage_.FIELDS, 0)
    n = 0
    for d in days:
        n += 1
        yield " ".join([d["day"].ljust(widths[0]), *(c.rjust(w) for c, w in zip(_cells(d), widths[1:], strict=True))])
        for key in ("calls", "call_seconds", "tokens", "cost_usd"):
            total[key] += d[key]
        usage_.add(total["usage"], d["usage"])
    total["minutes"] = total["call_seconds"] / 60
    yield " ".join(["total".ljust(widths[0]), *(c.rjust(w) for c, w in zip(_cells(total), widths[1:], strict=True))])
    yield f"{n} day(s) with usage"
