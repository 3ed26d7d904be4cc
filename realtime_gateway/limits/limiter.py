"""The gateway's admission check and the listener's accounting, on one table in the app's storage.

Rows (PartitionKey / RowKey):
- `rate-<YYYYMMDDHHMM>` / client key: `count` of admitted requests in that UTC minute.
- `slots` / `active`: `slots`, JSON {slot id: [expires, started, principal key]} of calls not ended.
- `usage-<YYYYMMDD>` / `app` or `p-<principal>`: that day's `usage_*` sums, `calls`,
  `call_seconds` and `cost_usd`.
Every write is ETag-conditional (`rows.Rows`), so instances share one limit.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any, Callable, Mapping

from azure.core.exceptions import AzureError, ResourceExistsError
from azure.data.tables import TableClient, TableServiceClient

from ..errors import ApiError
from ..settings import Limits
from . import usage as u
from .client import client_key, principal_key
from .rows import Contended, Rows

log = logging.getLogger("realtime_gateway.limits")

SLOTS = ("slots", "active")
USAGE_PREFIX = "usage-"  # + YYYYMMDD: a day's usage rows
BUDGET_CACHE_SECONDS = 5.0  # a day row read this recently decides without storage
SLOT_GRACE_SECONDS = 120  # after a call's deadline, a slot its listener never released expires
STORAGE_ERRORS = (AzureError, Contended)


def _day(now: float) -> str:
    return datetime.fromtimestamp(now, UTC).strftime("%Y%m%d")


def _usage_pk(day: str) -> str:
    return USAGE_PREFIX + day


def usage_rows(table: TableClient, first_day: str, last_day: str, rk: str = "app") -> list[dict[str, Any]]:
    """The day rows of one key (`app` or `p-<principal>`) from `first_day` to `last_day` (YYYYMMDD),
    oldest first: read only, for the auditor, who need not build a Limiter."""
    flt = (
        f"PartitionKey ge '{_usage_pk(first_day)}' and PartitionKey le '{_usage_pk(last_day)}' "
        f"and RowKey eq '{rk.replace(chr(39), chr(39) * 2)}'"
    )
    return sorted((dict(r) for r in table.query_entities(flt)), key=lambda r: str(r["PartitionKey"]))


def _minute(now: float) -> str:
    return "rate-" + datetime.fromtimestamp(now, UTC).strftime("%Y%m%d%H%M")


def _seconds_to_midnight(now: float) -> int:
    today = datetime.fromtimestamp(now, UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return max(1, math.ceil((today + timedelta(days=1)).timestamp() - now))


class Refused(ApiError):
    def __init__(self, code: str, message: str, retry_after: float) -> None:
        super().__init__(429, code, message, {"Retry-After": str(max(1, math.ceil(retry_after)))})


@dataclass
class Slot:
    """An admitted call's place under MAX_ACTIVE_CALLS (id None when the cap is off)."""

    limiter: Limiter
    id: str | None

    def release(self) -> None:
        if self.id is not None:
            self.limiter.release(self.id)


class Limiter:
    def __init__(
        self, limits: Limits, service: Callable[[], TableServiceClient], clock: Callable[[], float] = time.time
    ) -> None:
        self.limits = limits
        self._service, self._clock = service, clock
        self._rows: Rows | None = None
        self._lock = threading.Lock()
        self._read_at: dict[tuple[str, str], float] = {}
        self.refusals: Counter[str] = Counter()  # by code, since the process started
        self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="limits")

    @property
    def tracks_calls(self) -> bool:
        return bool(self.limits.max_active_calls or self.limits.daily_call_minutes)

    @property
    def on(self) -> bool:
        s = self.limits
        return bool(s.rate_per_minute or self.tracks_calls or self.budgets_on)

    @property
    def budgets_on(self) -> bool:
        s = self.limits
        return bool(
            s.daily_tokens or s.daily_call_minutes or s.principal_daily_tokens or s.principal_daily_call_minutes
        )

    def now(self) -> float:
        return self._clock() + self.limits.clock_offset

    @property
    def rows(self) -> Rows:
        with self._lock:
            if self._rows is None:
                service = self._service()
                try:
                    service.create_table(self.limits.table)
                except ResourceExistsError:
                    pass
                self._rows = Rows(service.get_table_client(self.limits.table))
            return self._rows

    # ---- the gateway: one call at the top of /api/connect and /api/token ------------------------
    def admit(
        self, headers: Mapping[str, str], principal: Mapping[str, Any] | None, rid: str, call: bool = True
    ) -> Slot:
        """Count the request against its client's rate, check the budgets and (for a call) take an
        active-call slot; raise a 429 `Refused` naming the limit, or 503 when storage cannot say."""
        if not self.on:
            return Slot(self, None)
        s = self.limits
        client = client_key(headers, principal, s.client_ip_header, s.client_ip_hop)
        now = self.now()
        pkey = principal_key(principal)
        try:
            if call and self.tracks_calls:
                return Slot(self, self._rate_and_slot(client, pkey, now, rid))
            if s.rate_per_minute:
                self._guard(lambda: self._rate(client, now), s.rate_fail_open, "rate limit", rid)
            if self.budgets_on:
                cached = self.rows.cached(*SLOTS) if self._rows is not None else None
                running = self._live_slots(cached or {}, now)
                self._guard(lambda: self._check_budget(now, pkey, running), s.budget_fail_open, "budget", rid)
            return Slot(self, None)
        except Refused as exc:
            self.refusals[exc.code] += 1
            log.warning(
                "limit refused rid=%s client=%s code=%s retry_after=%s",
                rid,
                client,
                exc.code,
                exc.headers["Retry-After"],
            )
            raise

    def _rate_and_slot(self, client: str, pkey: str | None, now: float, rid: str) -> str | None:
        """The rate count and the slot reservation run side by side: one round trip of latency.
        A client already known to be over its rate is refused first, without any."""
        s = self.limits
        rate = None
        if s.rate_per_minute:
            if self._rate_full(client, now):
                self._rate(client, now)  # raises from the cache
            rate = self._pool.submit(self._guard, lambda: self._rate(client, now), s.rate_fail_open, "rate limit", rid)
        slot_id = None
        try:
            slot_id = self._guard(lambda: self._reserve(rid, now, pkey), s.budget_fail_open, "budget", rid)
        finally:
            if rate is not None:
                try:
                    rate.result()
                except BaseException:
                    self.release(slot_id)
                    raise
        return slot_id

    def _rate_full(self, client: str, now: float) -> bool:
        row = self.rows.cached(_minute(now), client) if self._rows is not None else None
        return bool(row and int(row.get("count") or 0) >= self.limits.rate_per_minute)

    def _guard(self, check: Callable[[], Any], fail_open: bool, what: str, rid: str) -> Any:
        try:
            return check()
        except STORAGE_ERRORS as exc:
            self.refusals["limits_unavailable"] += 1
            if fail_open:
                log.error(
                    "limits rid=%s: %s not checked, storage unavailable (%s); letting it through",
                    rid,
                    what,
                    type(exc).__name__,
                )
                return None
            log.error(
                "limits rid=%s: %s not checked, storage unavailable (%s); refusing", rid, what, type(exc).__name__
            )
            raise ApiError(
                503,
                "limits_unavailable",
                "the gateway cannot check its limits now; try again shortly",
                {"Retry-After": "30"},
            ) from None

    def _rate(self, client: str, now: float) -> None:
        limit = self.limits.rate_per_minute

        def change(row: dict[str, Any]) -> tuple[dict[str, Any] | None, None]:
            count = int(row.get("count") or 0)
            if count >= limit:  # counts only grow within a minute: a cached "full" is never wrong
                raise Refused("rate_limited", f"more than {limit} requests a minute from this client", 60 - now % 60)
            return {"count": count + 1}, None

        self.rows.change(_minute(now), client, change, assume_new=True)

    @staticmethod
    def _live_slots(row: Mapping[str, Any], now: float) -> dict[str, list]:
        try:
            slots = json.loads(row.get("slots") or "{}")
        except ValueError:
            slots = {}
        return {k: v for k, v in slots.items() if isinstance(v, list) and len(v) == 3 and v[0] > now}

    def _reserve(self, slot_id: str, now: float, pkey: str | None) -> str:
        cap = self.limits.max_active_calls

        def change(row: dict[str, Any]) -> tuple[dict[str, Any], str]:
            slots = self._live_slots(row, now)
            self._check_budget(now, pkey, slots)
            if cap and len(slots) >= cap:
                soonest = min(v[0] for v in slots.values())
                raise Refused(
                    "too_many_active_calls",
                    f"{cap} calls are already running; try again shortly",
                    min(60, soonest - now),
                )
            slots[slot_id] = [round(now + self.limits.slot_attach_seconds, 3), round(now, 3), pkey or ""]
            return {"slots": json.dumps(slots, separators=(",", ":"))}, slot_id

        try:
            return self.rows.change(*SLOTS, change)
        except Refused as exc:
            if exc.code != "too_many_active_calls":
                raise
            self.rows.read(*SLOTS)  # slots free up elsewhere: never refuse on a stale copy
            return self.rows.change(*SLOTS, change)

    def _day_row(self, day: str, rk: str, now: float) -> dict[str, Any]:
        key = (_usage_pk(day), rk)
        row = self.rows.cached(*key)
        if row is None or time.monotonic() - self._read_at.get(key, 0.0) > BUDGET_CACHE_SECONDS:
            row = self.rows.read(*key)
            self._read_at[key] = time.monotonic()
        return row

    def _check_budget(self, now: float, pkey: str | None, slots: Mapping[str, list]) -> None:
        s = self.limits
        day = _day(now)
        checks: list[tuple[str, str | None, int, int, str]] = [
            ("app", None, s.daily_tokens, s.daily_call_minutes, "today's")
        ]
        if pkey:
            checks.append((pkey, pkey, s.principal_daily_tokens, s.principal_daily_call_minutes, "your"))
        for rk, who, tokens, minutes, whose in checks:
            if not (tokens or minutes):
                continue
            row = self._day_row(day, rk, now)
            if tokens and u.budget_tokens(u.from_row(row)) >= tokens:
                raise Refused("budget_exhausted", f"{whose} token budget is spent", _seconds_to_midnight(now))
            if minutes:
                running = sum(
                    now - max(v[1], now - (now % 86400)) for v in slots.values() if who is None or v[2] == who
                )
                if float(row.get("call_seconds") or 0) + running >= minutes * 60:
                    raise Refused("budget_exhausted", f"{whose} call minutes are spent", _seconds_to_midnight(now))

    # ---- the listener ------------------------------------------------------------------------
    def renew(self, slot_id: str | None, seconds: float, pkey: str | None) -> None:
        """The call attached: hold its slot until its deadline (plus grace) instead of the attach limit."""
        if slot_id is None or not self.tracks_calls:
            return
        now = self.now()

        def change(row: dict[str, Any]) -> tuple[dict[str, Any], None]:
            slots = self._live_slots(row, now)
            started = slots.get(slot_id, [0, now, ""])[1]
            slots[slot_id] = [round(now + seconds + SLOT_GRACE_SECONDS, 3), started, pkey or ""]
            return {"slots": json.dumps(slots, separators=(",", ":"))}, None

        self._quietly("renew slot", lambda: self.rows.change(*SLOTS, change))

    def release(self, slot_id: str | None) -> None:
        if slot_id is None or not self.tracks_calls:
            return
        now = self.now()

        def change(row: dict[str, Any]) -> tuple[dict[str, Any] | None, None]:
            before = json.loads(row.get("slots") or "{}") if row else {}
            slots = self._live_slots(row, now)
            slots.pop(slot_id, None)
            if slots == before:
                return None, None
            return {"slots": json.dumps(slots, separators=(",", ":"))}, None

        self._quietly("release slot", lambda: self.rows.change(*SLOTS, change))

    def charge(self, delta: Mapping[str, float], seconds: float, calls: int, pkey: str | None) -> None:
        """Add one listener's usage to today's rows (the app's and the principal's)."""
        if not (delta or seconds or calls):
            return
        day = _day(self.now())
        prices = self.limits.prices

        def change(row: dict[str, Any]) -> tuple[dict[str, Any], None]:
            total = u.add(u.from_row(row), delta)
            new = {
                **u.to_row(total),
                "calls": int(row.get("calls") or 0) + calls,
                "call_seconds": round(float(row.get("call_seconds") or 0) + seconds, 3),
                "cost_usd": u.cost_usd(total, prices),
            }
            return new, None

        for rk in ["app"] + ([pkey] if pkey else []):
            self._quietly(f"charge {rk}", partial(self._change, _usage_pk(day), rk, change))

    def spent(self, pkey: str | None) -> str | None:
        """Which of today's budgets is spent (the app's or this principal's), counting running calls;
        None when none is, or when storage cannot say (a running call is never ended for that)."""
        if not self.budgets_on:
            return None
        now = self.now()
        try:
            self._check_budget(now, pkey, self._live_slots(self.rows.read(*SLOTS), now))
        except Refused as exc:
            return str(exc.message)
        except Exception as exc:
            log.error("limits: budget not checked for a running call (%s)", type(exc).__name__)
        return None

    def background(self, fn: Callable[..., Any], *args: Any) -> None:
        """Listener-side work off the archive's thread (a slow limits table never delays it)."""
        self._pool.submit(self._quietly, getattr(fn, "__name__", "limits"), partial(fn, *args))

    def day_usage(self, day: str, rk: str = "app") -> dict[str, Any]:
        return self.rows.read(_usage_pk(day), rk)

    def _change(self, pk: str, rk: str, change: Any) -> Any:
        return self.rows.change(pk, rk, change)  # self.rows inside: built (or failing) under _quietly

    def _quietly(self, what: str, op: Callable[[], Any]) -> None:
        # The listener never fails a call for its accounting: a lost slot expires, a lost charge is
        # still in the session rows.
        try:
            op()
        except Exception as exc:  # storage down or not configured alike
            log.error("limits: %s failed (%s)", what, type(exc).__name__)
