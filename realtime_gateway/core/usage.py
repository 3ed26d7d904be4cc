"""Token usage as the service reports it, summed per call and per day, and its estimated cost.

`response.done` carries `response.usage` (input tokens include cached ones);
`conversation.item.input_audio_transcription.completed` carries the transcription's own usage,
billed by tokens or by seconds of audio.
"""

from __future__ import annotations

from typing import Any, Mapping

FIELDS = (
    "responses",
    "total_tokens",
    "input_tokens",
    "output_tokens",
    "input_text_tokens",
    "input_audio_tokens",
    "input_image_tokens",
    "input_cached_tokens",
    "input_cached_text_tokens",
    "input_cached_audio_tokens",
    "output_text_tokens",
    "output_audio_tokens",
    "transcription_input_tokens",
    "transcription_output_tokens",
    "transcription_seconds",
)
Usage = dict[str, float]


def _n(value: Any) -> float:
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else 0


def _map(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def usage_of(event_type: str, event: Mapping[str, Any]) -> Usage | None:
    """The usage one server event reports (its non-zero counts), or None."""
    found = _reported(event_type, event)
    return {k: v for k, v in found.items() if v} if found else None


def _reported(event_type: str, event: Mapping[str, Any]) -> Usage | None:
    if event_type == "response.done":
        usage = _map(_map(event.get("response")).get("usage"))
        if not usage:
            return None
        inp, out = _map(usage.get("input_token_details")), _map(usage.get("output_token_details"))
        cached = _map(inp.get("cached_tokens_details"))
        return {
            "responses": 1,
            "total_tokens": _n(usage.get("total_tokens")),
            "input_tokens": _n(usage.get("input_tokens")),
            "output_tokens": _n(usage.get("output_tokens")),
            "input_text_tokens": _n(inp.get("text_tokens")),
            "input_audio_tokens": _n(inp.get("audio_tokens")),
            "input_image_tokens": _n(inp.get("image_tokens")),
            "input_cached_tokens": _n(inp.get("cached_tokens")),
            "input_cached_text_tokens": _n(cached.get("text_tokens")),
            "input_cached_audio_tokens": _n(cached.get("audio_tokens")),
            "output_text_tokens": _n(out.get("text_tokens")),
            "output_audio_tokens": _n(out.get("audio_tokens")),
        }
    if event_type == "conversation.item.input_audio_transcription.completed":
        usage = _map(event.get("usage"))
        if usage.get("type") == "tokens":
            return {
                "transcription_input_tokens": _n(usage.get("input_tokens")),
                "transcription_output_tokens": _n(usage.get("output_tokens")),
            }
        if usage.get("type") == "duration":
            return {"transcription_seconds": _n(usage.get("seconds"))}
    return None


def add(total: Usage, more: Mapping[str, float]) -> Usage:
    for name, value in more.items():
        total[name] = total.get(name, 0) + value
    return total


def minus(after: Mapping[str, float], before: Mapping[str, float]) -> Usage:
    return {
        name: after.get(name, 0) - before.get(name, 0) for name in FIELDS if after.get(name, 0) != before.get(name, 0)
    }


def budget_tokens(u: Mapping[str, float]) -> float:
    """What DAILY_TOKEN_BUDGET counts: every token billed, the transcription's included."""
    return u.get("total_tokens", 0) + u.get("transcription_input_tokens", 0) + u.get("transcription_output_tokens", 0)


def cost_usd(u: Mapping[str, float], prices: Mapping[str, float]) -> float:
    """Estimated USD at `prices` (per million tokens; transcription also per minute)."""
    text, audio = u.get("input_text_tokens", 0), u.get("input_audio_tokens", 0)
    text += max(0, u.get("input_tokens", 0) - text - audio - u.get("input_image_tokens", 0))  # no details: text
    cached = u.get("input_cached_tokens", 0)
    cached_text, cached_audio = u.get("input_cached_text_tokens", 0), u.get("input_cached_audio_tokens", 0)
    if cached and not (cached_text or cached_audio):  # no split reported: the prefix is text first
        cached_text = min(cached, text)
        cached_audio = cached - cached_text
    per_million = (
        max(0, text - cached_text) * prices["input_text"]
        + max(0, audio - cached_audio) * prices["input_audio"]
        + cached * prices["cached_input"]
        + u.get("output_text_tokens", 0) * prices["output_text"]
        + u.get("output_audio_tokens", 0) * prices["output_audio"]
        + (u.get("transcription_input_tokens", 0) + u.get("transcription_output_tokens", 0)) * prices["transcription"]
    )
    return round(per_million / 1e6 + u.get("transcription_seconds", 0) / 60 * prices["transcription_minute"], 6)


def to_row(u: Mapping[str, float], prefix: str = "usage_") -> dict[str, Any]:
    """Table properties: whole numbers as int (Int64), seconds as float."""
    return {
        prefix + name: (round(float(u.get(name, 0)), 3) if name == "transcription_seconds" else int(u.get(name, 0)))
        for name in FIELDS
    }


def from_row(row: Mapping[str, Any], prefix: str = "usage_") -> Usage:
    return {name: _n(row.get(prefix + name)) for name in FIELDS if _n(row.get(prefix + name))}
