"""Exactly-once with bounded memory: the call log remembers the last SEEN_WINDOW event ids, so a
frame seen again within a reconnect is skipped while a long call's memory stays flat."""

from __future__ import annotations

import json

from realtime_gateway.archive.call_log import SEEN_WINDOW, CallLog
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
