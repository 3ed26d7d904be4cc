"""A successor's history from its predecessor's archived events: replayed items first as they were
replayed, then the call's own words (spoken and typed, the assistant's as heard), as item.create
messages with fixed ids so a resumed listener skips what the service already added."""

from __future__ import annotations

from realtime_gateway.listener import replay


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
