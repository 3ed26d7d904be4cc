"""GA server events and session objects, shaped like the service's (and `openai.types.realtime`)."""

from __future__ import annotations

import copy
import time
from typing import Any

from .ids import new_id
from .overrides import DEFAULT_VOICE, ResponseSpec

# webrtcfilter=on: the only server events the browser's data channel receives (DESIGN.md).
BROWSER_EVENTS = frozenset(
    {
        "input_audio_buffer.speech_started",
        "input_audio_buffer.speech_stopped",
        "output_audio_buffer.started",
        "output_audio_buffer.stopped",
        "conversation.item.input_audio_transcription.completed",
        "conversation.item.added",
        "conversation.item.created",
        "response.output_text.delta",
        "response.output_text.done",
        "response.output_audio_transcript.delta",
        "response.output_audio_transcript.done",
    }
)


def browser_sees(event: dict) -> bool:
    """webrtcfilter=on: the 11 event types, and of the item events only messages (the service
    keeps function calls and their outputs off the data channel: "no function calls" in DESIGN.md)."""
    if event["type"] not in BROWSER_EVENTS:
        return False
    item = event.get("item")
    return not isinstance(item, dict) or item.get("type") == "message"


PCM = {"type": "audio/pcm", "rate": 24000}
TRANSCRIPTION_MODEL = "whisper-1"


def default_session(deployment: str) -> dict[str, Any]:
    """The session configuration a client_secrets request is merged into."""
    return {
        "type": "realtime",
        "model": deployment,
        "instructions": "",
        "output_modalities": ["audio"],
        "audio": {
            "input": {
                "format": dict(PCM),
                "transcription": {"model": TRANSCRIPTION_MODEL},
                "noise_reduction": None,
                "turn_detection": {
                    "type": "server_vad",
                    "threshold": 0.5,
                    "prefix_padding_ms": 300,
                    "silence_duration_ms": 500,
                    "create_response": True,
                    "interrupt_response": True,
                    "idle_timeout_ms": None,
                },
            },
            "output": {"format": dict(PCM), "voice": DEFAULT_VOICE, "speed": 1.0},
        },
        "tools": [],
        "tool_choice": "auto",
        "max_output_tokens": "inf",
        "tracing": None,
        "truncation": "auto",
        "prompt": None,
        "include": None,
    }


def merge(base: dict, update: dict) -> dict:
    """Deep merge of a session update into a session (dicts merge, anything else replaces)."""
    out = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def session_object(session: dict, session_id: str, expires_at: int) -> dict:
    """The session as the service reports it (id/object/expires_at added)."""
    return {"id": session_id, "object": "realtime.session", "expires_at": expires_at, **session}


def event(type_: str, **fields: Any) -> dict:
    return {"type": type_, "event_id": new_id("event"), **fields}


def _user_item(item_id: str, content: dict) -> dict:
    return {
        "id": item_id,
        "object": "realtime.item",
        "type": "message",
        "status": "completed",
        "role": "user",
        "content": [content],
    }


def user_text_item(item_id: str, text: str) -> dict:
    return _user_item(item_id, {"type": "input_text", "text": text})


def user_audio_item(item_id: str, transcript: str | None) -> dict:
    return _user_item(item_id, {"type": "input_audio", "transcript": transcript})


def assistant_item(item_id: str, status: str, audio: bool, text: str | None) -> dict:
    content = []
    if text is not None:
        content = [{"type": "output_audio", "transcript": text} if audio else {"type": "output_text", "text": text}]
    return {
        "id": item_id,
        "object": "realtime.item",
        "type": "message",
        "status": status,
        "role": "assistant",
        "content": content,
    }


def function_call_item(item_id: str, call_id: str, name: str, arguments: str, status: str) -> dict:
    return {
        "id": item_id,
        "object": "realtime.item",
        "type": "function_call",
        "status": status,
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
    }


def function_call_output_item(item_id: str, call_id: str, output: str) -> dict:
    return {
        "id": item_id,
        "object": "realtime.item",
        "type": "function_call_output",
        "status": "completed",
        "call_id": call_id,
        "output": output,
    }


# why a response ended other than completed (a cut at max_output_tokens is "incomplete")
STATUS_DETAILS = {
    "cancelled": {"type": "cancelled", "reason": "client_cancelled"},
    "incomplete": {"type": "incomplete", "reason": "max_output_tokens"},
}


def response_object(
    response_id: str,
    conversation_id: str,
    status: str,
    spec: ResponseSpec,
    output: list[dict],
    usage: dict | None,
) -> dict:
    return {
        "id": response_id,
        "object": "realtime.response",
        "conversation_id": conversation_id,
        "status": status,
        "status_details": copy.deepcopy(STATUS_DETAILS.get(status)),
        "output": output,
        "output_modalities": spec.modalities,
        "max_output_tokens": spec.max_output_tokens,
        "metadata": spec.metadata,
        "audio": {"output": {"format": dict(PCM), "voice": spec.voice}},
        # The response's effective instructions (the session's, or its own from response.create), so
        # the sideband can hold a policy against them. RealtimeResponse does not declare the field;
        # the openai package's pydantic models allow extra fields, so it still validates.
        "instructions": spec.instructions,
        "usage": usage,
    }


def rate_limits(tokens_used: int) -> list[dict]:
    return [
        {"name": "requests", "limit": 1000, "remaining": 999, "reset_seconds": 0.06},
        {
            "name": "tokens",
            "limit": 100000,
            "remaining": max(0, 100000 - tokens_used),
            "reset_seconds": round(tokens_used * 0.0006, 3),
        },
    ]


def error_event(
    message: str,
    code: str | None = None,
    type_: str = "invalid_request_error",
    client_event_id: str | None = None,
    param: str | None = None,
) -> dict:
    return event(
        "error", error={"type": type_, "code": code, "message": message, "param": param, "event_id": client_event_id}
    )


def duration_words(seconds: float) -> str:
    """1800 -> "30 minutes", 60 -> "1 minute", 2.5 -> "2.5 seconds"."""
    if seconds >= 60 and seconds % 60 == 0:
        minutes = int(seconds // 60)
        return f"{minutes} minute{'' if minutes == 1 else 's'}"
    return f"{seconds:g} second{'' if seconds == 1 else 's'}"


def session_expired_event(max_seconds: float) -> dict:
    """What the service sends at its session cap, just before it closes the sideband with 1001."""
    return error_event(f"Your session hit the maximum duration of {duration_words(max_seconds)}.", "session_expired")


def now() -> int:
    return int(time.time())
