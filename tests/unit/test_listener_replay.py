"""A successor's history from its predecessor's archived events: replayed items first as they were
replayed, then the call's own words (spoken and typed, the assistant's as heard), as item.create
messages with fixed ids so a resumed listener skips what the service already added; a reply the
person interrupted (`conversation.item.truncated`) as far as they heard it, marked."""

from __future__ import annotations

from realtime_gateway.archive.turns import INTERRUPTED_MARK, call_turns, cut_heard
from realtime_gateway.listener import replay
from tests.fixtures.realtime_types import assert_server_event


def added(item_id: str, role: str, kind: str, text: str) -> tuple[str, dict]:
    item = {"id": item_id, "type": "message", "role": role, "content": [{"type": kind, "text": text}]}
    return "conversation.item.added", {"type": "conversation.item.added", "item": item}


def test_history_keeps_the_order_and_the_roles():
    events = [
        added("replay_0000", "user", "input_text", "My name is Ada"),
        added("replay_0001", "assistant", "output_text", "Hello Ada"),
        ("conversation.item.input_audio_transcription.completed", {"transcript": "What time is it?"}),
        ("response.output_audio_transcript.done", {"transcript": "It is noon."}),
        added("item_7", "user", "input_text", "thanks"),
        ("response.output_text.done", {"text": "You are welcome."}),
        added("item_8", "assistant", "output_audio", ""),  # the reply's own item, before its words
    ]
    history = replay.turns(events)
    assert history == [
        ("user", "My name is Ada"),
        ("assistant", "Hello Ada"),
        ("user", "What time is it?"),
        ("assistant", "It is noon."),
        ("user", "thanks"),
        ("assistant", "You are welcome."),
    ]
    messages = replay.items(history)
    assert [m["item"]["id"] for m in messages][:2] == ["replay_0000", "replay_0001"]
    assert messages[1]["item"]["content"] == [{"type": "output_text", "text": "Hello Ada"}]
    assert all(m["type"] == "conversation.item.create" and "instructions" not in m for m in messages)


REPLY = "The sea is wide and the sky above it is wider still, and both are blue today."


def spoken_reply(item_id: str, text: str, audio_tokens: int | None) -> list[tuple[str, dict]]:
    """A spoken reply's transcript and its response.done, shaped as the service sends them."""
    done = {
        "type": "response.output_audio_transcript.done",
        "event_id": "event_t",
        "response_id": "resp_1",
        "item_id": item_id,
        "output_index": 0,
        "content_index": 0,
        "transcript": text,
    }
    item = {
        "id": item_id,
        "type": "message",
        "object": "realtime.item",
        "status": "completed",
        "role": "assistant",
        "content": [{"type": "output_audio", "transcript": text}],
    }
    response: dict = {"id": "resp_1", "object": "realtime.response", "status": "completed", "output": [item]}
    if audio_tokens is not None:
        response["usage"] = {
            "total_tokens": audio_tokens + 20,
            "input_tokens": 10,
            "output_tokens": audio_tokens + 10,
            "output_token_details": {"text_tokens": 10, "audio_tokens": audio_tokens},
        }
    return [
        (done["type"], done),
        ("response.done", {"type": "response.done", "event_id": "event_d", "response": response}),
    ]


def truncated(item_id: str, audio_end_ms: int) -> tuple[str, dict]:
    event = {
        "type": "conversation.item.truncated",
        "event_id": "event_x",
        "item_id": item_id,
        "content_index": 0,
        "audio_end_ms": audio_end_ms,
    }
    return event["type"], event


def test_the_events_these_tests_build_are_what_the_service_sends():
    for _, event in [*spoken_reply("item_a", REPLY, 100), truncated("item_a", 10)]:
        assert_server_event(event)


def test_an_interrupted_reply_is_replayed_as_heard_and_marked():
    # 100 audio tokens at 50 ms: 5 s of audio; the person heard the first 2 s, two fifths of the words
    events = [
        ("conversation.item.input_audio_transcription.completed", {"transcript": "Tell me about the sea"}),
        *spoken_reply("item_a", REPLY, 100),
        truncated("item_a", 2000),
        ("conversation.item.input_audio_transcription.completed", {"transcript": "Stop, what colour is it?"}),
    ]
    history = replay.turns(events)
    heard = REPLY[: round(len(REPLY) * 2 / 5)].rsplit(" ", 1)[0]
    assert history == [
        ("user", "Tell me about the sea"),
        ("assistant", heard + INTERRUPTED_MARK),
        ("user", "Stop, what colour is it?"),
    ]
    assert "blue" not in history[1][1]  # words never spoken stay out of the successor's context
    turn = call_turns(events)[1]
    assert (turn.said, turn.heard_ms, turn.audio_ms, turn.interrupted) == (REPLY, 2000, 5000, True)


def test_without_usage_the_length_comes_from_the_words_and_the_shortest_cut_holds():
    events = [*spoken_reply("item_a", REPLY, None), truncated("item_a", 4000), truncated("item_a", 1000)]
    [turn] = call_turns(events)
    assert turn.audio_ms == round(len(REPLY) * 1000 / 15) and turn.heard_ms == 1000
    assert turn.text == cut_heard(REPLY, 1000, turn.audio_ms) and REPLY.startswith(turn.text)


def test_a_reply_cut_before_a_word_was_heard_is_left_out_and_a_whole_one_is_unmarked():
    events = [
        *spoken_reply("item_a", REPLY, 100),
        truncated("item_a", 0),
        *spoken_reply("item_b", "Fine.", 20),
        truncated("item_b", 1000),  # all of its 1 s was heard
        truncated("item_other", 5),  # an item this call never spoke: nothing to cut
    ]
    assert replay.turns(events) == [("assistant", "Fine." + INTERRUPTED_MARK)]
    assert cut_heard("Fine.", 1000, 1000) == "Fine."


def test_a_replayed_item_passes_through_as_it_was_replayed():
    # the predecessor's listener already cut and marked it: a third call gets it unchanged
    marked = "The sea is wide" + INTERRUPTED_MARK
    events = [added("replay_0003", "assistant", "output_text", marked), truncated("replay_0003", 0)]
    assert replay.turns(events) == [("assistant", marked)]
