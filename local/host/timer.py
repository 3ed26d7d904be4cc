"""Timer triggers: the NCRONTAB schedule of the binding (six fields, seconds first, UTC, as the
real host reads it; or a TimeSpan `hh:mm:ss` interval), `runOnStartup`, and manual runs through
the host's admin API (`POST /admin/functions/<name>`, master key)."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta

from azure.functions.timer import TimerRequest

from .app_loader import FunctionSpec
from .host_config import TIMESPAN, parse_timespan
from .invoker import Invoker

log = logging.getLogger("host")
NAMES = {
    "sun": 0, "mon": 1, "tue": 2, "wed": 3, "thu": 4, "fri": 5, "sat": 6,
    "jan": 1, "feb": 2, "mar": 3, "apr": 4, "may": 5, "jun": 6, "jul": 7, "aug": 8, "sep": 9, "oct": 10,
    "nov": 11, "dec": 12,
}  # fmt: skip
FIELDS = (("second", 0, 59), ("minute", 0, 59), ("hour", 0, 23), ("day", 1, 31), ("month", 1, 12), ("weekday", 0, 6))


class BadSchedule(ValueError):
    pass


def _field(text: str, name: str, lo: int, hi: int) -> frozenset[int]:
    values: set[int] = set()
    for part in text.lower().split(","):
        rng, _, step_text = part.partition("/")
        step = int(step_text) if step_text else 1
        if rng == "*":
            a, b = lo, hi
        elif "-" in rng:
            a, b = (int(NAMES.get(x, x)) for x in rng.split("-", 1))
        else:
            a = int(NAMES.get(rng, rng))
            b = hi if step_text else a
        if name == "weekday" and b == 7:  # 7 is Sunday too
            values.add(0)
            b = 6
        if not (lo <= a <= b <= hi) or step < 1:
            raise BadSchedule(f"{name} {part!r} is outside {lo}-{hi}")
        values.update(range(a, b + 1, step))
    return frozenset(values)


class Schedule:
    """`next_after(t)`: the first moment after t that the schedule names (UTC)."""

    def __init__(self, expression: str):
        self.expression = expression.strip()
        self.interval: float | None = None
        if TIMESPAN.match(self.expression):  # "00:00:05": every five seconds
            self.interval = parse_timespan(self.expression, None)
            if not self.interval:
                raise BadSchedule(f"timer interval {expression!r} must be positive")
            return
        parts = self.expression.split()
        if len(parts) != 6:
            raise BadSchedule(
                f"schedule {expression!r} must have six NCRONTAB fields: second minute hour day month day-of-week"
            )
        try:
            self.sets = [_field(p, *f) for p, f in zip(parts, FIELDS, strict=True)]
        except ValueError as exc:
            raise BadSchedule(f"schedule {expression!r}: {exc}") from None

    def next_after(self, t: datetime) -> datetime:
        if self.interval is not None:
            return t + timedelta(seconds=self.interval)
        seconds, minutes, hours, days, months, weekdays = self.sets
        base = t.replace(microsecond=0) + timedelta(seconds=1)
        day = base.replace(hour=0, minute=0, second=0)
        for _ in range(366 * 5):
            # Day of month and day of week must both match (NCrontab's rule, unlike Vixie cron's OR).
            if day.month in months and day.day in days and (day.weekday() + 1) % 7 in weekdays:
                for h in sorted(hours):
                    for m in sorted(minutes):
                        for s in sorted(seconds):
                            moment = day.replace(hour=h, minute=m, second=s)
                            if moment >= base:
                                return moment
            day += timedelta(days=1)
        raise BadSchedule(f"schedule {self.expression!r} names no time in the next five years")


class TimerListener:
    def __init__(self, spec: FunctionSpec, invoker: Invoker):
        self.spec, self.invoker = spec, invoker
        self.schedule = Schedule(str(spec.trigger.get("schedule") or ""))
        self.run_on_startup = bool(spec.trigger.get("runOnStartup"))
        self.last: datetime | None = None
        self._lock = asyncio.Lock()  # like the real host's singleton lock: runs never overlap

    async def run(self) -> None:
        if self.run_on_startup:
            await self.fire("Timer fired at startup (runOnStartup)")
        while True:
            due = self.schedule.next_after(datetime.now(UTC))
            await asyncio.sleep(max(0.0, (due - datetime.now(UTC)).total_seconds()))
            await self.fire(f"Timer fired at {due.isoformat()}", due)

    async def fire(self, reason: str, due: datetime | None = None) -> None:
        async with self._lock:
            now = datetime.now(UTC)
            request = TimerRequest(
                past_due=due is not None and (now - due).total_seconds() > 1,
                schedule_status={
                    "Last": self.last.isoformat() if self.last else None,
                    "Next": self.schedule.next_after(now).isoformat(),
                    "LastUpdated": now.isoformat(),
                },
                schedule={"AdjustForDST": True},
            )
            try:
                await self.invoker.invoke(self.spec, {self.spec.trigger["name"]: request}, reason)
            except Exception:
                pass  # logged by the invoker; a timer has no retries, the next occurrence runs
            self.last = now
