"""The limiter on Azurite with an injected clock: ETag-conditional counters hold across instances
(two Limiter objects = two instances), slots are released and expire, budgets refuse until the next
UTC day, and an unreachable table fails open or closed as configured."""

from __future__ import annotations

import secrets
import threading
from dataclasses import replace
from datetime import UTC, datetime
from types import SimpleNamespace

import pytest

from local.testing.host_process import wait_until
from realtime_gateway.archive.tables import table_service_from_env
from realtime_gateway.errors import ApiError
from realtime_gateway.limits import limiter as limiter_module
from realtime_gateway.limits.limiter import Limiter
from realtime_gateway.services import LIMITS_STORAGE
from realtime_gateway.settings import Limits

NOON = datetime(2026, 11, 23, 12, 0, 10, tzinfo=UTC).timestamp()
XFF = {"x-forwarded-for": "203.0.113.7:4000"}


class Clock:
    def __init__(self, now: float = NOON) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def limiter(azurite, limits: Limits, clock: Clock, conn: str | None = None) -> Limiter:
    env = {"AzureWebJobsStorage": conn or azurite.connection_string}
    return Limiter(limits, lambda: table_service_from_env(env, False, **LIMITS_STORAGE), clock)


def refused(fn) -> ApiError:
    with pytest.raises(ApiError) as err:
        fn()
    return err.value


@pytest.fixture
def limits():
    return Limits(table=f"limits{secrets.token_hex(4)}", rate_per_minute=0, max_active_calls=0, daily_spend_usd=0)


def test_two_instances_admit_exactly_the_rate_between_them(azurite, limits):
    clock = Clock()
    instances = [limiter(azurite, replace(limits, rate_per_minute=7), clock) for _ in range(2)]
    admitted, codes = [], []
    lock = threading.Lock()

    def one(lim: Limiter, n: int) -> None:
        try:
            lim.admit(XFF, None, f"rid-{n}", call=False)
            with lock:
                admitted.append(n)
        except ApiError as exc:
            with lock:
                codes.append((exc.status, exc.code, int(exc.headers["Retry-After"])))

    threads = [threading.Thread(target=one, args=(instances[i % 2], i)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(admitted) == 7
    assert codes == [(429, "rate_limited", 50)] * 9  # 50 s to the next minute at 12:00:10
    assert sum(i.refusals["rate_limited"] for i in instances) == 9
    # another client still gets through; the next minute the first one does again
    instances[0].admit({"x-forwarded-for": "198.51.100.1:1"}, None, "rid-other", call=False)
    clock.now += 50
    instances[1].admit(XFF, None, "rid-later", call=False)


def test_slots_are_freed_when_released_and_when_they_expire(azurite, limits):
    clock = Clock()
    limits = replace(limits, max_active_calls=2, slot_attach_seconds=30)
    a, b = limiter(azurite, limits, clock), limiter(azurite, limits, clock)
    first = a.admit(XFF, None, "call-1")
    a.admit(XFF, None, "call-2")
    err = refused(lambda: b.admit(XFF, None, "call-3"))
    assert (err.status, err.code, err.headers["Retry-After"]) == (429, "too_many_active_calls", "30")
    first.release()  # on instance a; instance b's cached row is stale and must not refuse
    third = b.admit(XFF, None, "call-3")
    # call-2 never attached: its slot expires after CALL_SLOT_ATTACH_SECONDS; call-3 attached (renewed)
    b.renew(third.id, 600, None)
    clock.now += 31
    a.admit(XFF, None, "call-4")
    assert refused(lambda: a.admit(XFF, None, "call-5")).code == "too_many_active_calls"


def test_a_spent_budget_refuses_until_the_next_utc_day(azurite, limits):
    clock = Clock()
    limits = replace(limits, daily_tokens=1000, principal_daily_tokens=300)
    lim = limiter(azurite, limits, clock)
    alice, bob = {"id": "alice"}, {"id": "bob"}
    lim.admit(XFF, alice, "r1", call=False)
    lim.charge({"total_tokens": 300, "responses": 1}, 42.0, 1, "p-alice")
    err = refused(lambda: lim.admit(XFF, alice, "r2", call=False))
    assert (err.code, err.message) == ("budget_exhausted", "your token budget is spent")
    assert err.headers["Retry-After"] == str(12 * 3600 - 10)  # to midnight UTC
    lim.admit(XFF, bob, "r3", call=False)  # bob's own budget is untouched
    lim.charge({"total_tokens": 700}, 0.0, 0, "p-bob")
    clock.now += 6  # past the day row's cache
    assert refused(lambda: lim.admit(XFF, None, "r4", call=False)).message == "today's token budget is spent"
    row = lim.day_usage("20261123")
    assert (row["usage_total_tokens"], row["calls"], row["call_seconds"]) == (1000, 1, 42.0)
    clock.now += 12 * 3600  # tomorrow
    lim.admit(XFF, alice, "r5", call=False)


def test_call_minutes_count_running_calls(azurite, limits):
    clock = Clock()
    lim = limiter(azurite, replace(limits, daily_call_minutes=2), clock)
    lim.charge({}, 60.0, 1, None)  # one minute already ended today
    lim.admit(XFF, None, "running")
    clock.now += 59
    lim.admit(XFF, None, "second")  # 60 + 59 s used: still under two minutes
    clock.now += 31  # 60 + 90 + 31 s
    assert refused(lambda: lim.admit(XFF, None, "third")).code == "budget_exhausted"


@pytest.mark.parametrize(
    "rate_open, budget_open, token_status, connect_status",
    [(True, False, None, 503), (False, True, 503, 503), (True, True, None, None)],
)
def test_unreachable_storage_fails_open_or_closed(
    azurite, limits, rate_open, budget_open, token_status, connect_status
):
    from local.processes import free_port

    dead = azurite.connection_string.replace(f":{azurite.table_port}/", f":{free_port()}/")
    limits = replace(
        limits, rate_per_minute=5, max_active_calls=5, rate_fail_open=rate_open, budget_fail_open=budget_open
    )
    lim = limiter(azurite, limits, Clock(), conn=dead)
    for call, status in ((False, token_status), (True, connect_status)):
        if status is None:
            lim.admit(XFF, None, "r", call=call)
        else:
            err = refused(lambda call=call: lim.admit(XFF, None, "r", call=call))
            assert (err.status, err.code, err.headers["Retry-After"]) == (503, "limits_unavailable", "30")
    assert lim.refusals["limits_unavailable"] >= 1


def test_a_handed_over_call_is_not_charged_its_minutes_twice(azurite, limits):
    """The first listener charges its 60 s at the hand-over; the slot then counts from there, so at
    90 s the day holds 60 charged + 30 running, not 60 + 90."""
    clock = Clock()
    lim = limiter(azurite, replace(limits, daily_call_minutes=2), clock)
    call = lim.admit(XFF, None, "long-call")
    clock.now += 60
    lim.charge({}, 60.0, 0, None)  # the hand-over
    lim.charged_until(call.id, clock.now)
    clock.now += 30
    lim.admit(XFF, None, "second")  # 60 + 30 = 90 s < 120 s (counted twice it would be 150 s)
    clock.now += 14  # 60 + 44 + 14 = 118 s
    lim.admit(XFF, None, "third")
    clock.now += 1  # 60 + 45 + 15 + 0 ... = 121 s
    assert refused(lambda: lim.admit(XFF, None, "fourth")).code == "budget_exhausted"


def test_the_cap_is_split_exactly_over_the_shards_and_holds_thousands(azurite, limits):
    lim = limiter(azurite, replace(limits, max_active_calls=5000, slot_shards=16), Clock())
    assert lim.shards == 16 and sum(lim.capacity(i) or 0 for i in range(16)) == 5000
    small = limiter(azurite, replace(limits, max_active_calls=3, slot_shards=16), Clock())
    assert small.shards == 3 and [small.capacity(i) for i in range(3)] == [1, 1, 1]
    # a full shard of 5000 / 16 entries (each with a principal) fits one table property (32K chars)
    import json

    entry = [1733333333.123, 1733333333.123, "0123456789ab"]
    row = json.dumps({f"015.{i:012x}": entry for i in range(313)}, separators=(",", ":"))
    assert len(row) < 32_768


def test_slot_ids_are_made_by_the_server_and_spread_over_shards(azurite, limits):
    lim = limiter(azurite, replace(limits, max_active_calls=40, slot_shards=8), Clock())
    ids = [lim.admit(XFF, None, "same-request-id").id for _ in range(40)]
    assert len(set(ids)) == 40 and all(i and i.split(".")[0].isdigit() for i in ids)
    assert len({i.split(".")[0] for i in ids if i}) == 8  # every shard holds its part
    assert refused(lambda: lim.admit(XFF, None, "same-request-id")).code == "too_many_active_calls"


def test_young_shard_copies_decide_at_once_and_are_renewed_in_the_background(azurite, limits, monkeypatch):
    """After a quiet spell the first call does not wait for every shard row: copies up to
    COPIES_MAX_AGE old decide its budget, and one background read renews them. Older copies are
    read on the request's path, as before."""
    monkeypatch.setattr(limiter_module, "BUDGET_CACHE_SECONDS", 0.0)  # every copy is stale at once
    # each call takes a shard of its own: a write to the shard the other instance took would re-read
    # that row on the call's path (as it must), which is not what this test holds
    starts = iter([0, 4, 8, 12])
    monkeypatch.setattr(limiter_module, "random", SimpleNamespace(randrange=lambda n: next(starts)))
    clock = Clock()
    limits = replace(limits, daily_call_minutes=60)
    ours, theirs = limiter(azurite, limits, clock), limiter(azurite, limits, clock)
    ours.admit(XFF, None, "first")  # no copies yet: read on the path
    theirs.admit(XFF, None, "theirs")  # a running call that our copies do not show

    gate = threading.Event()
    read = ours.rows.read

    def held_read(pk: str, rk: str):
        if pk == "slots":
            assert gate.wait(30), "the test never opened the gate"
        return read(pk, rk)

    ours.rows.read = held_read

    def seen() -> int:  # the running calls in our copies, as they are (no read)
        return sum(len(shard) for shard in ours._shard_slots(clock.now, refresh=False))

    done = threading.Event()
    threading.Thread(target=lambda: (ours.admit(XFF, None, "second"), done.set()), daemon=True).start()
    assert done.wait(10), "the call waited for the shard rows"  # decided on the copies
    assert seen() == 2  # the copies: its own two calls, not theirs yet
    gate.set()
    wait_until(lambda: seen() == 3 and not ours._refreshing.locked(), 10, 0.02, "the copies renewed in the background")

    # copies older than COPIES_MAX_AGE: the shard rows are read before the call is decided
    monkeypatch.setattr(limiter_module, "COPIES_MAX_AGE", 0.0)
    gate.clear()
    done.clear()
    threading.Thread(target=lambda: (ours.admit(XFF, None, "third"), done.set()), daemon=True).start()
    assert not done.wait(1.0), "old copies decided the call"
    gate.set()
    assert done.wait(10)
