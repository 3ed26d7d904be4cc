"""The gateway's admission check and the listener's accounting, on one table in the app's storage.

Rows (PartitionKey / RowKey):
- `rate-<YYYYMMDDHHMM>` / client key: `count` of admitted calls and tokens in that UTC minute;
  `ctl-<YYYYMMDDHHMM>` / client key: the same for the hang-up and call-state routes.
- `slots` / `shard-NNN`: `slots`, JSON {slot id: [expires, charged until, principal digest]} of
  calls not ended. Slot ids are made here (never from a request header) and name their shard, so
  instances spread over LIMIT_SLOT_SHARDS rows instead of all writing one, and MAX_ACTIVE_CALLS is
  split exactly between the shards.
- `usage-<YYYYMMDD>` / `app` or `p-<principal>`: that day's `usage_*` sums, `calls`,
  `call_seconds` and `cost_usd`.
Every write is ETag-conditional (`rows.Rows`), so instances share one limit.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import random
import secrets
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any, Callable, Iterable, Mapping

from azure.core.exceptions import AzureError, ResourceExistsError
from azure.data.tables import TableClient, TableServiceClient

from ..core import usage as u
from ..core.clock import day_of
from ..errors import ApiError
from ..settings import Limits
from .client_key import client_key, principal_key
from .rows import Contended, Rows

log = logging.getLogger("realtime_gateway.limits")

SLOTS_PK = "slots"
RATE_PREFIX, CONTROL_PREFIX = "rate-", "ctl-"
USAGE_PREFIX = "usage-"  # + YYYYMMDD: a day's usage rows
BUDGET_CACHE_SECONDS = 5.0  # a day or shard row read this recently decides without storage
# shard copies younger than this decide a budget at once while a read renews them off the request's path
COPIES_MAX_AGE = 60.0
SLOT_GRACE_SECONDS = 120  # after a call's deadline, a slot its listener never released expires
STORAGE_ERRORS = (AzureError, Contended)


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


def _minute(prefix: str, now: float) -> str:
    return prefix + datetime.fromtimestamp(now, UTC).strftime("%Y%m%d%H%M")


def _seconds_to_midnight(now: float) -> int:
    today = datetime.fromtimestamp(now, UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return max(1, math.ceil((today + timedelta(days=1)).timestamp() - now))


def _shard_rk(shard: int) -> str:
    return f"shard-{shard:03d}"


def shard_of(slot_id: str | None) -> int | None:
    """The shard a slot id names (`NNN.<hex>`); None for an id this code did not make."""
    head, dot, _ = (slot_id or "").partition(".")
    return int(head) if dot and head.isdigit() else None


def principal_digest(pkey: str | None) -> str:
    """A short stand-in for a principal key in slot entries: a shard row holds hundreds of them."""
    return hashlib.sha256(pkey.encode("utf-8")).hexdigest()[:12] if pkey else ""


class _ShardFull(Exception):
    def __init__(self, soonest: float) -> None:
        self.soonest = soonest


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
        # shard reads only: `_running` is also called from `_pool`'s threads, which must not wait on themselves
        self._readers = ThreadPoolExecutor(max_workers=8, thread_name_prefix="limits-read")
        self._refreshing = threading.Lock()  # one request re-reads the shard rows; the others use the copies

    @property
    def tracks_calls(self) -> bool:
        """Slots are kept: for the cap, and for the running minutes that minute and spend budgets count."""
        s = self.limits
        return bool(
            s.max_active_calls
            or s.daily_call_minutes
            or s.principal_daily_call_minutes
            or ((s.daily_spend_usd or s.principal_daily_spend_usd) and s.running_minute_usd)
        )

    @property
    def on(self) -> bool:
        s = self.limits
        return bool(s.rate_per_minute or self.tracks_calls or self.budgets_on)

    @property
    def budgets_on(self) -> bool:
        s = self.limits
        return bool(
            s.daily_tokens
            or s.daily_call_minutes
            or s.principal_daily_tokens
            or s.principal_daily_call_minutes
            or s.daily_spend_usd
            or s.principal_daily_spend_usd
        )

    @property
    def shards(self) -> int:
        """How many shard rows hold slots: never more than the cap, so each shard holds at least one."""
        s = self.limits
        return max(1, min(s.slot_shards, s.max_active_calls) if s.max_active_calls else s.slot_shards)

    def capacity(self, shard: int) -> int | None:
        """This shard's part of MAX_ACTIVE_CALLS (the parts add up to it exactly); None: no cap."""
        cap, n = self.limits.max_active_calls, self.shards
        return cap // n + (1 if shard < cap % n else 0) if cap else None

    def now(self) -> float:
        return self._clock()

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
                self._guard(
                    lambda: self._rate(RATE_PREFIX, client, now, s.rate_per_minute), s.rate_fail_open, "rate limit", rid
                )
            if self.budgets_on:
                self._guard(
                    lambda: self._check_budget(now, pkey, self._running(now)), s.budget_fail_open, "budget", rid
                )
            return Slot(self, None)
        except Refused as exc:
            self._refused(exc, client, rid)
            raise

    def admit_control(self, headers: Mapping[str, str], principal: Mapping[str, Any] | None, rid: str) -> None:
        """The hang-up and call-state routes: a per-client rate of their own (CONTROL_RATE_PER_MINUTE).
        Past the limit a client is refused from this process's cache, without touching storage."""
        s = self.limits
        if not s.control_rate_per_minute:
            return
        client = client_key(headers, principal, s.client_ip_header, s.client_ip_hop)
        now = self.now()
        try:
            self._guard(
                lambda: self._rate(CONTROL_PREFIX, client, now, s.control_rate_per_minute),
                s.rate_fail_open,
                "control rate limit",
                rid,
            )
        except Refused as exc:
            self._refused(exc, client, rid)
            raise

    def _refused(self, exc: Refused, client: str, rid: str) -> None:
        self.refusals[exc.code] += 1
        log.warning(
            "limit refused rid=%s client=%s code=%s retry_after=%s", rid, client, exc.code, exc.headers["Retry-After"]
        )

    def _rate_and_slot(self, client: str, pkey: str | None, now: float, rid: str) -> str | None:
        """The rate count and the slot reservation run side by side: one round trip of latency.
        A client already known to be over its rate is refused first, without any."""
        s = self.limits
        rate = None
        if s.rate_per_minute:
            limit = s.rate_per_minute
            if self._rate_full(RATE_PREFIX, client, now, limit):
                self._rate(RATE_PREFIX, client, now, limit)  # raises from the cache
            rate = self._pool.submit(
                self._guard, lambda: self._rate(RATE_PREFIX, client, now, limit), s.rate_fail_open, "rate limit", rid
            )
        slot_id = None
        try:
            slot_id = self._guard(lambda: self._reserve(now, pkey), s.budget_fail_open, "budget", rid)
        finally:
            if rate is not None:
                try:
                    rate.result()
                except BaseException:
                    self.release(slot_id)
                    raise
        return slot_id

    def _rate_full(self, prefix: str, client: str, now: float, limit: int) -> bool:
        row = self.rows.cached(_minute(prefix, now), client) if self._rows is not None else None
        return bool(row and int(row.get("count") or 0) >= limit)

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

    def _rate(self, prefix: str, client: str, now: float, limit: int) -> None:
        if self._rate_full(prefix, client, now, limit):  # counts only grow within a minute: never wrong
            raise Refused("rate_limited", f"more than {limit} requests a minute from this client", 60 - now % 60)

        def change(row: dict[str, Any]) -> tuple[dict[str, Any] | None, None]:
            count = int(row.get("count") or 0)
            if count >= limit:
                raise Refused("rate_limited", f"more than {limit} requests a minute from this client", 60 - now % 60)
            return {"count": count + 1}, None

        self.rows.change(_minute(prefix, now), client, change, assume_new=True)

    # ---- slots ---------------------------------------------------------------------------------
    @staticmethod
    def _live_slots(row: Mapping[str, Any], now: float) -> dict[str, list]:
        try:
            slots = json.loads(row.get("slots") or "{}")
        except ValueError:
            slots = {}
        return {k: v for k, v in slots.items() if isinstance(v, list) and len(v) == 3 and v[0] > now}

    @staticmethod
    def _slots_row(slots: Mapping[str, list]) -> dict[str, Any]:
        return {"slots": json.dumps(slots, separators=(",", ":"))}

    def _running(self, now: float, fresh: bool = False) -> dict[str, list]:
        """Every live slot of every shard: what the minute and spend budgets count as running."""
        return {k: v for shard in self._shard_slots(now, fresh) for k, v in shard.items()}

    def _shard_slots(
        self, now: float, fresh: bool = False, refresh: bool = True, later: list[Callable[[], None]] | None = None
    ) -> list[dict[str, list]]:
        """Each shard's live slots, from copies read within BUDGET_CACHE_SECONDS (or now; or as cached,
        without `refresh`), each row parsed once. Stale shards are read side by side, by one request at
        a time: the others go on with the copies they have rather than all reading every shard at once
        when the copies expire. Copies younger than COPIES_MAX_AGE decide at once, and that one request
        renews them in the background (the first call after a quiet spell would wait a round trip or
        two for running minutes that differ by seconds). With `later`, that background read is not
        started but appended to it, for the caller to start once its own reads and writes are done."""
        keys = [(SLOTS_PK, _shard_rk(i)) for i in range(self.shards)]
        age = {k: time.monotonic() - self._read_at.get(k, 0.0) for k in keys}
        if (refresh or fresh) and (fresh or max(age.values()) > BUDGET_CACHE_SECONDS):
            have_copies = all(self.rows.cached(*k) is not None for k in keys)
            if self._refreshing.acquire(blocking=fresh or not have_copies):
                if not fresh and have_copies and max(age.values()) <= COPIES_MAX_AGE:
                    renew = partial(self._renew_in_background, keys)
                    if later is None:
                        renew()
                    else:
                        later.append(renew)
                else:
                    self._read_shards(keys, fresh)
        return [self._live_slots(self.rows.cached(*key) or {}, now) for key in keys]

    def _renew_in_background(self, keys: list[tuple[str, str]]) -> None:
        """Under `_refreshing`: re-read the stale shards on the pool (it frees `_refreshing`)."""
        try:
            self._pool.submit(self._read_shards, keys, False, True)
        except RuntimeError:  # the process is shutting down
            self._refreshing.release()

    def _read_shards(self, keys: list[tuple[str, str]], fresh: bool, background: bool = False) -> None:
        """Re-read the shards still stale (all, when `fresh`), side by side; frees `_refreshing`."""
        try:
            stale = [k for k in keys if fresh or time.monotonic() - self._read_at.get(k, 0.0) > BUDGET_CACHE_SECONDS]
            list(self._readers.map(lambda k: self.rows.read(*k), stale))
            for key in stale:
                self._read_at[key] = time.monotonic()
        except Exception as exc:
            if not background:
                raise
            log.warning("limits: shard rows not re-read in the background (%s)", type(exc).__name__)
        finally:
            self._refreshing.release()

    def _reserve(self, now: float, pkey: str | None) -> str:
        """A new slot in a shard with room: the budgets first, then the shards in an order that
        spreads instances (random start) and tries the ones this process last saw with room first.
        Stale shard copies are re-read in the background only once the day row and the slot are done:
        started first, their reads went ahead of this request's on a storage that answers one request
        at a time (Azurite) and took the process's threads from it."""
        renew: list[Callable[[], None]] = []
        # parsed once, for the budgets and the order
        live = self._shard_slots(now, refresh=self.budgets_on, later=renew)
        try:
            if self.budgets_on:
                self._check_budget(now, pkey, {k: v for shard in live for k, v in shard.items()})
            n = self.shards
            start = random.randrange(n)
            order = sorted(range(n), key=lambda i: (self._seen_full(i, live[i]), (i - start) % n))
            soonest = now + 60
            for shard in order:
                slot_id = f"{shard:03d}.{secrets.token_hex(6)}"
                try:
                    return self._take(shard, slot_id, now, pkey)
                except _ShardFull as full:
                    soonest = min(soonest, full.soonest)
        finally:
            for start_renewal in renew:
                start_renewal()
        cap = self.limits.max_active_calls
        raise Refused(
            "too_many_active_calls", f"{cap} calls are already running; try again shortly", min(60, soonest - now)
        )

    def _seen_full(self, shard: int, slots: Mapping[str, list]) -> bool:
        cap = self.capacity(shard)
        return cap is not None and len(slots) >= cap

    def _take(self, shard: int, slot_id: str, now: float, pkey: str | None) -> str:
        cap = self.capacity(shard)
        entry = [round(now + self.limits.slot_attach_seconds, 3), round(now, 3), principal_digest(pkey)]

        def change(row: dict[str, Any]) -> tuple[dict[str, Any], str]:
            slots = self._live_slots(row, now)
            if cap is not None and len(slots) >= cap:
                raise _ShardFull(min(v[0] for v in slots.values()))
            slots[slot_id] = entry
            return self._slots_row(slots), slot_id

        key = (SLOTS_PK, _shard_rk(shard))
        try:
            return self.rows.change(*key, change)
        except _ShardFull:
            self.rows.read(*key)  # slots free up elsewhere: never refuse on a stale copy
            self._read_at[key] = time.monotonic()
            return self.rows.change(*key, change)

    def _change_slot(self, slot_id: str | None, what: str, edit: Callable[[dict[str, list], float], bool]) -> None:
        """Apply `edit` to the live slots of `slot_id`'s shard (it says whether it changed them)."""
        shard = shard_of(slot_id)
        if shard is None or not self.tracks_calls:
            return
        now = self.now()

        def change(row: dict[str, Any]) -> tuple[dict[str, Any] | None, None]:
            slots = self._live_slots(row, now)
            return (self._slots_row(slots) if edit(slots, now) else None), None

        self._quietly(what, lambda: self.rows.change(SLOTS_PK, _shard_rk(shard), change))

    def _day_row(self, day: str, rk: str, now: float) -> dict[str, Any]:
        key = (_usage_pk(day), rk)
        row = self.rows.cached(*key)
        if row is None or time.monotonic() - self._read_at.get(key, 0.0) > BUDGET_CACHE_SECONDS:
            row = self.rows.read(*key)
            self._read_at[key] = time.monotonic()
        return row

    def _check_budget(self, now: float, pkey: str | None, slots: Mapping[str, list]) -> None:
        s = self.limits
        day = day_of(now)
        midnight = now - (now % 86400)
        checks: list[tuple[str, str | None, int, int, float, str]] = [
            ("app", None, s.daily_tokens, s.daily_call_minutes, s.daily_spend_usd, "today's")
        ]
        if pkey:
            checks.append(
                (pkey, principal_digest(pkey), s.principal_daily_tokens, s.principal_daily_call_minutes,
                 s.principal_daily_spend_usd, "your")
            )  # fmt: skip
        for rk, who, tokens, minutes, usd, whose in checks:
            if not (tokens or minutes or usd):
                continue
            row = self._day_row(day, rk, now)
            if tokens and u.budget_tokens(u.from_row(row)) >= tokens:
                raise Refused("budget_exhausted", f"{whose} token budget is spent", _seconds_to_midnight(now))
            # a slot's second field is the time its call is charged until: a handed-over call's
            # earlier listeners already put their minutes on the day row
            running = sum(now - max(v[1], midnight) for v in slots.values() if who is None or v[2] == who)
            if minutes and float(row.get("call_seconds") or 0) + running >= minutes * 60:
                raise Refused("budget_exhausted", f"{whose} call minutes are spent", _seconds_to_midnight(now))
            if usd and float(row.get("cost_usd") or 0) + running / 60 * s.running_minute_usd >= usd:
                raise Refused("budget_exhausted", f"{whose} spending limit is reached", _seconds_to_midnight(now))

    # ---- the listener ------------------------------------------------------------------------
    def renew(self, slot_id: str | None, seconds: float, pkey: str | None) -> None:
        """The call attached: hold its slot until its deadline (plus grace) instead of the attach limit."""

        def edit(slots: dict[str, list], now: float) -> bool:
            charged = slots.get(slot_id or "", [0, now, ""])[1]
            slots[slot_id or ""] = [round(now + seconds + SLOT_GRACE_SECONDS, 3), charged, principal_digest(pkey)]
            return True

        self._change_slot(slot_id, "renew slot", edit)

    def release(self, slot_id: str | None) -> None:
        self._change_slot(slot_id, "release slot", lambda slots, now: slots.pop(slot_id or "", None) is not None)

    def charged_until(self, slot_id: str | None, at: float) -> None:
        """A listener handed over and charged its minutes: running time counts from `at` on."""

        def edit(slots: dict[str, list], now: float) -> bool:
            if slot_id not in slots:
                return False
            slots[slot_id][1] = round(at, 3)
            return True

        self._change_slot(slot_id, "mark slot charged", edit)

    def reconcile(self, ended: Iterable[str]) -> int:
        """Free the slots of calls the archive says have ended (`ended`: their slot ids): a host
        stopped between a call's end and its release leaves them held until their deadline."""
        gone = {slot for slot in ended if shard_of(slot) is not None}
        freed = 0
        for shard in sorted({shard_of(slot) or 0 for slot in gone}):

            def change(row: dict[str, Any]) -> tuple[dict[str, Any] | None, int]:
                slots = self._live_slots(row, self.now())
                held = [k for k in slots if k in gone]
                for k in held:
                    del slots[k]
                return (self._slots_row(slots) if held else None), len(held)

            freed += self.rows.change(SLOTS_PK, _shard_rk(shard), change)
        return freed

    def live_slot_ids(self) -> set[str]:
        return set(self._running(self.now(), fresh=True))

    def charge(self, delta: Mapping[str, float], seconds: float, calls: int, pkey: str | None) -> None:
        """Add one listener's usage to today's rows (the app's and the principal's)."""
        if not (delta or seconds or calls):
            return
        day = day_of(self.now())
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
            self._check_budget(now, pkey, self._running(now))
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
