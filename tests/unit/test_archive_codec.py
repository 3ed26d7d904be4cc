"""Row encoding of the archive: splitting, part rows, transaction grouping, the hash chain."""

import json

from realtime_gateway.archive.chain import genesis, link
from realtime_gateway.archive.codec import (
    BATCH_BYTES,
    CHUNKS_PER_ROW,
    PROPERTY_CHARS,
    EventRecord,
    entity_bytes,
    event_entities,
    record_from_rows,
    row_key,
    split_property,
    split_utf16,
    transaction_batches,
)
from realtime_gateway.archive.store import session_view
from realtime_gateway.archive.summary import CallSummary


def _utf16_units(s: str) -> int:
    return len(s.encode("utf-16-le")) // 2


def test_split_respects_utf16_units_and_surrogate_pairs():
    text = ("a" * 5 + "\U0001f600") * 20_000  # non-BMP chars take two UTF-16 units
    pieces = split_utf16(text, 1000)
    assert "".join(pieces) == text
    assert all(_utf16_units(p) <= 1000 for p in pieces)
    assert all(not ("\ud800" <= p[-1] <= "\udbff") for p in pieces)
    assert split_utf16("") == [""]


def test_row_keys_sort_in_arrival_order_with_parts_after_their_event():
    keys = [row_key(9), row_key(10), row_key(10) + ".001", row_key(11), row_key(100)]
    assert sorted(keys) == keys


def _rec(payload: str, seq: int = 7) -> EventRecord:
    return EventRecord(seq, "event_1", "response.done", "2026-01-01T00:00:00.000000+00:00", payload, "h")


def test_big_event_spans_part_rows_and_joins_back_whole():
    payload = json.dumps({"type": "response.done", "pad": "x" * (PROPERTY_CHARS * (CHUNKS_PER_ROW + 3))})
    entities = event_entities("rtc_1", _rec(payload))
    main, parts = entities[-1], entities[:-1]
    assert main["RowKey"] == row_key(7) and len(parts) == 1 and parts[0]["RowKey"] == row_key(7) + ".001"
    assert main["rows"] == 2 and main["chars"] == len(payload)
    for e in entities:
        assert entity_bytes(e) < 1_000_000
        assert all(len(v) <= PROPERTY_CHARS for v in e.values() if isinstance(v, str))
    assert record_from_rows(main, parts).payload == payload


def test_batches_stay_within_transaction_limits():
    small = [e for i in range(250) for e in event_entities("rtc_1", _rec('{"a":1}', i))]
    assert [len(b) for b in transaction_batches(small)] == [100, 100, 50]
    big = [e for i in range(12) for e in event_entities("rtc_1", _rec("y" * 300_000, i))]
    for batch in transaction_batches(big):
        assert sum(entity_bytes(e) for e in batch) <= BATCH_BYTES and len(batch) <= 100


def test_hash_chain_changes_with_any_field_and_with_the_call():
    base = link(genesis("rtc_1"), 0, "e1", "t", "2026", "{}")
    assert base != link(genesis("rtc_2"), 0, "e1", "t", "2026", "{}")
    for changed in (
        (1, "e1", "t", "2026", "{}"),
        (0, "e2", "t", "2026", "{}"),
        (0, "e1", "u", "2026", "{}"),
        (0, "e1", "t", "2027", "{}"),
        (0, "e1", "t", "2026", "{ }"),
    ):
        assert link(genesis("rtc_1"), *changed) != base


def test_summary_counts_and_turns_round_trip_through_the_row():
    s = CallSummary()
    s.apply("session.created", {"session": {"model": "gpt-realtime", "audio": {"output": {"voice": "marin"}}}})
    s.apply("conversation.item.input_audio_transcription.completed", {"transcript": "hello"})
    s.apply("response.output_audio_transcript.done", {"transcript": "hi there"})
    s.apply("response.output_text.done", {"text": "text reply"})
    s.apply("conversation.item.added", {"item": {"role": "user", "content": [{"type": "input_text", "text": "typed"}]}})
    s.apply("conversation.item.added", {"item": {"role": "user", "content": [{"type": "input_audio"}]}})
    s.apply("invalid.json", None)
    fields = s.to_fields()
    back = CallSummary.from_fields(fields)
    assert back.counts == s.counts and back.total == 7
    assert (back.user_turns, back.assistant_turns) == (2, 2)
    assert (s.model, s.voice) == ("gpt-realtime", "marin")


def test_the_row_stays_the_same_size_however_long_the_call():
    # the words stay in the event rows: a summary rewritten on each flush must not grow with them
    summary = CallSummary()
    sizes = []
    for n in range(2000):
        summary.apply("response.output_text.done", {"text": f"answer {n} " + "x" * 500})
        summary.apply("conversation.item.input_audio_transcription.completed", {"transcript": "y" * 500})
        if n in (10, 1999):
            sizes.append(entity_bytes(summary.to_fields()))
    assert sizes[1] - sizes[0] < 16  # a few more digits in the counts, nothing else
    assert not any(k.endswith("_transcript") for k in summary.to_fields())


def test_a_row_written_with_transcripts_still_reads():
    # rows from before the change carry the transcripts (split over properties above 32K): a
    # resumed call counts its turns from them, and session_view joins them for the readers
    user = "\n".join(f"question {n} " + "q" * 80 for n in range(500))
    row = {"counts": "{}", **split_property("user_transcript", user), "assistant_transcript": "one\ntwo"}
    assert "user_transcript_1" in row  # really split
    back = CallSummary.from_fields(row)
    assert (back.user_turns, back.assistant_turns) == (500, 2)
    view = session_view({"PartitionKey": "20260101", "RowKey": "rtc_old", **row})
    assert view["user_transcript"] == user and "user_transcript_1" not in view
    assert "user_transcript" not in session_view({"PartitionKey": "20260101", "RowKey": "rtc_new", "counts": "{}"})
