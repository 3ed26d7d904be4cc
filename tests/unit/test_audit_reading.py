"""The auditor's reading of archived events, in-process: a phone caller's key presses in the
conversation listing and the report's timeline (issue 21), an interrupted reply with what was heard,
and a conversation's calls stitched into one (one clock, each call's start marked, turns numbered on)."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta

from realtime_gateway.archive.chain import genesis, link
from realtime_gateway.archive.codec import EventRecord
from realtime_gateway.audit.report import render_conversation, render_timeline
from realtime_gateway.audit.transcript import (
    conversation_transcript,
    conversation_turns,
    format_transcript,
    transcript,
)
from realtime_gateway.audit.verify import Finding, VerifyReport
from tests.fixtures.realtime_types import SERVER_EVENT, assert_server_event, extras

T0 = datetime(2026, 12, 1, 10, 0, 0, tzinfo=UTC)


def records(call_id: str, start: float, events: list[tuple[float, dict]]) -> list[EventRecord]:
    """Archived rows of one call: (seconds from T0, the event as the service sent it)."""
    out, head = [], genesis(call_id)
    for seq, (at, event) in enumerate(events):
        event = {"event_id": f"event_{call_id}_{seq}", **event}
        received = (T0 + timedelta(seconds=start + at)).isoformat()
        payload = json.dumps(event)
        head = link(head, seq, event["event_id"], event["type"], received, payload)
        out.append(EventRecord(seq, event["event_id"], event["type"], received, payload, head))
    return out


def dtmf(key: str) -> dict:
    return {"type": "input_audio_buffer.dtmf_event_received", "event": key, "received_at": 1764583200}


def heard(text: str) -> dict:
    return {
        "type": "conversation.item.input_audio_transcription.completed",
        "item_id": "item_u",
        "content_index": 0,
        "transcript": text,
        "usage": {"type": "duration", "seconds": 1.5},
    }


def said(item_id: str, text: str) -> dict:
    return {
        "type": "response.output_audio_transcript.done",
        "response_id": "resp_1",
        "item_id": item_id,
        "output_index": 0,
        "content_index": 0,
        "transcript": text,
    }


def test_the_events_these_tests_build_are_what_the_service_sends():
    for event in (heard("hi"), said("item_a", "hello")):
        assert_server_event({"event_id": "event_1", **event})
    # the SDK's DTMF type declares no event_id (every other server event has one): checked bare
    parsed = SERVER_EVENT.validate_python(dtmf("5"))
    assert parsed.type == "input_audio_buffer.dtmf_event_received" and not extras(parsed)
    assert_server_event(
        {
            "event_id": "event_2",
            "type": "conversation.item.truncated",
            "item_id": "item_a",
            "content_index": 0,
            "audio_end_ms": 1500,
        }
    )


def test_key_presses_show_in_the_listing_and_in_the_report_timeline():
    recs = records(
        "rtc_phone",
        0,
        [(0.0, heard("press one for sales")), (1.0, dtmf("1")), (1.5, dtmf("#")), (2.0, said("item_a", "Sales."))],
    )
    lines = transcript(recs)
    assert [(ln.who, ln.text) for ln in lines] == [
        ("user", "press one for sales"),
        ("key", "pressed 1"),
        ("key", "pressed #"),
        ("assistant", "Sales."),
    ]
    listing = list(format_transcript(lines))
    assert listing[1].endswith("+   1.000 s  Keypad: pressed 1") and "Keypad: pressed #" in listing[2]
    page = render_timeline({"call_id": "rtc_phone"}, recs, VerifyReport("rtc_phone", events=4, head=recs[-1].hash))
    assert "key presses (2)" in page  # the chart's lane
    assert re.search(r'<text [^>]*fill="#8e44ad">1<title>key 1 at 10:00:01.000</title>', page)
    assert page.count('<li class="key">') == 2 and "key # pressed" in page
    assert '<p class="say key"><b>Keypad</b>' in page


def test_an_interrupted_reply_shows_what_was_heard():
    reply = "One two three four five six seven eight nine ten."
    done = {
        "type": "response.done",
        "response": {
            "id": "resp_1",
            "object": "realtime.response",
            "status": "completed",
            "output": [{"id": "item_a", "type": "message", "role": "assistant", "content": []}],
            "usage": {"output_token_details": {"audio_tokens": 80, "text_tokens": 12}},
        },
    }
    cut = {"type": "conversation.item.truncated", "item_id": "item_a", "content_index": 0, "audio_end_ms": 2000}
    recs = records("rtc_cut", 0, [(0.0, said("item_a", reply)), (0.1, done), (2.0, cut)])
    line = transcript(recs)[-1]
    # 80 tokens at 50 ms: 4 s of audio, half of it heard
    assert line.who == "interrupted"
    assert line.text == "the reply was cut at 2.0 s of about 4.0 s; heard: “One two three four five”"
    assert "the person heard 2.000 s of this reply" in render_timeline({}, recs, VerifyReport("rtc_cut"))


def test_a_conversation_reads_as_one_on_one_clock_with_each_call_marked():
    first = records(
        "rtc_one",
        0,
        [
            (0.0, {"type": "input_audio_buffer.speech_stopped", "audio_end_ms": 900, "item_id": "item_u"}),
            (0.4, {"type": "output_audio_buffer.started", "response_id": "resp_1"}),
            (1.0, heard("My name is Ada")),
            (2.0, said("item_a", "Hello Ada")),
        ],
    )
    second = records(
        "rtc_two",
        30,
        [
            (0.0, {"type": "input_audio_buffer.speech_stopped", "audio_end_ms": 900, "item_id": "item_v"}),
            (0.25, {"type": "output_audio_buffer.started", "response_id": "resp_2"}),
            (1.0, heard("What is my name?")),
            (2.0, said("item_b", "Ada")),
            (3.0, dtmf("9")),
        ],
    )
    rows = [
        {"call_id": "rtc_one", "conversation_id": "rtc_one", "continued_by": "rtc_two", "usage_total_tokens": 100},
        {"call_id": "rtc_two", "conversation_id": "rtc_one", "continues": "rtc_one", "usage_total_tokens": 50},
    ]
    calls = [(rows[0], first), (rows[1], second)]
    lines = conversation_transcript(calls)
    assert [(ln.who, ln.offset) for ln in lines] == [
        ("call", 0.0),
        ("user", 1.0),
        ("assistant", 2.0),
        ("call", 30.0),  # the second call's times go on from the first call's start
        ("user", 31.0),
        ("assistant", 32.0),
        ("key", 33.0),
    ]
    assert lines[3].text == "call 2 of 2: rtc_two, continues rtc_one"
    listing = list(format_transcript(lines))
    assert listing[0].endswith("--- call 1 of 2: rtc_one ---") and "+  30.000 s  --- call 2 of 2" in listing[3]
    latency = conversation_turns(calls)
    assert [(t.call, t.n, t.latency_ms) for t in latency] == [(1, 1, 400.0), (2, 2, 250.0)]

    ok = [VerifyReport(c, events=len(r), head=r[-1].hash) for c, r in (("rtc_one", first), ("rtc_two", second))]
    page = render_conversation([(rows[0], first, ok[0]), (rows[1], second, ok[1])])
    assert "<h1>Conversation rtc_one</h1>" in page and "all 2 calls verified" in page
    assert page.count('<li class="call">') == 2 and "Call 2 of 2: rtc_two, continues rtc_one" in page
    assert page.count('stroke-dasharray="4 3"') == 2  # each call's start on the chart
    assert "<td>total tokens</td><td class=n>150</td>" in page  # the calls' usage summed
    assert ">+30.000 s<" in page  # the second call's first event, on the conversation's clock
    assert "#2.0<" in page  # its rows numbered within their call

    broken = VerifyReport("rtc_two", events=5, findings=[Finding("link", "", "call rtc_two is not linked")])
    page = render_conversation([(rows[0], first, ok[0]), (rows[1], second, broken)])
    assert "verification failed" in page and "call rtc_two is not linked" in page
