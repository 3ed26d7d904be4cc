"""Exactly-once with bounded memory: the call log remembers about the last SEEN_WINDOW event ids in
a ring of bytes of a fixed size, so a frame seen again within a reconnect is skipped while a long
call's memory stays flat, and a resume reads only the tail of the call's index."""

from __future__ import annotations

import json

from realtime_gateway.archive.call_log import SEEN_WINDOW, CallLog, IdWindow, id_key
from realtime_gateway.core.events import parse


def frame(n: int) -> str:
    return json.dumps({"type": "response.output_text.delta", "event_id": f"event_{n}", "delta": "x"})


def test_duplicates_within_the_window_are_skipped_and_memory_stays_bounded():
    log = CallLog("rtc_window")
    for n in range(SEEN_WINDOW * 3):
        assert log.event(parse(frame(n)), 0.0)
    assert len(log.seen) == SEEN_WINDOW
    assert log.event(parse(frame(SEEN_WINDOW * 3 - 1)), 0.0) == []  # a recent one, seen again
    assert log.duplicates == 1 and log.next_seq == SEEN_WINDOW * 3


class IndexedArchive:
    """A long call's archived index, in memory; records how much of it a resume asked for."""

    def __init__(self, rows: int) -> None:
        self.index = [(seq, f"event_{seq}", f"hash{seq}", f"2026-12-01T10:00:{seq % 60:02d}") for seq in range(rows)]
        self.asked: list[int] = []

    def iter_index(self, call_id: str, after_seq: int = -1, page_size: int | None = None):
        self.asked.append(after_seq)
        return (row for row in self.index if row[0] > after_seq)

    def read_events(self, call_id: str, after_seq: int = -1):
        return iter(())


def test_a_resume_reads_only_the_tail_of_a_long_call():
    archive = IndexedArchive(20_000)
    log = CallLog("rtc_long", listener=2)
    log.resume(archive, {"head_seq": 19_999, "counts": "{}"})
    assert archive.asked == [19_999 - SEEN_WINDOW]  # one query, of the window's rows only
    assert (log.next_seq, log.head) == (20_000, "hash19999")
    assert SEEN_WINDOW // 2 < len(log.seen) <= SEEN_WINDOW
    assert log.event(parse(frame(19_999)), 0.0) == [] and log.event(parse(frame(20_000)), 0.0)


def test_the_window_is_exact_and_fixed_in_size():
    window = IdWindow()
    assert window.nbytes == 8 * SEEN_WINDOW and len(window) == 0
    assert id_key("event_0") not in window and bytes(8) not in window  # an empty ring's zeros are no slot
    keys = [id_key(f"event_{n}") for n in range(3 * SEEN_WINDOW)]
    for n, key in enumerate(keys):
        window.add(key)
        assert key in window
        if n == SEEN_WINDOW // 4:  # the first quarter-window all still there
            assert all(k in window for k in keys[: n + 1])
    assert len(window) == SEEN_WINDOW and window.nbytes == 8 * SEEN_WINDOW
    assert all(k in window for k in keys[-SEEN_WINDOW // 4 :])  # the last quarter-window, surely
    assert sum(k in window for k in keys[:SEEN_WINDOW]) == 0  # two windows ago: gone
    assert id_key("never seen") not in window
    # bytes that straddle two slots are not a match: only whole, aligned slots count
    small = IdWindow(2 * IdWindow.BUCKETS)  # two slots a bucket
    first, second = bytes([0, 1, 2, 3, 0, 5, 6, 7]), bytes([0, 0, 0, 0, 9, 9, 9, 9])  # both in bucket 0
    small.add(first)
    small.add(second)
    assert first in small and second in small and first[4:] + second[:4] not in small
