"""A `response.create`'s own parameters (`instructions`, `metadata`, `output_modalities`,
`audio.output.voice`, `max_output_tokens`): checked when the event arrives, resolved against the
session when the response starts (a session.update may land in between, as on the service).

`conversation: "none"` (an out-of-band response) and `input` (its own context) are not emulated:
the first is answered with an `unsupported` error, the second is ignored.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

DEFAULT_VOICE = "alloy"  # a session's voice until one is set

MAX_OUTPUT_TOKENS = 4096  # the service's upper bound for an integer max_output_tokens


class Problem(NamedTuple):
    message: str
    param: str
    code: str = "invalid_value"


@dataclass(frozen=True)
class ResponseSpec:
    """What one response runs with: the session's settings, with the response's own on top."""

    instructions: str
    overridden: bool  # the response brought instructions that differ from the session's
    modalities: list[str]
    voice: Any
    metadata: dict[str, str] | None
    max_output_tokens: int | str  # an int, or "inf"


def _voice(params: dict) -> Any:
    return ((params.get("audio") or {}).get("output") or {}).get("voice")


def _is_metadata(value: Any) -> bool:
    # the service's Metadata: at most 16 pairs, keys up to 64 characters, values up to 512
    return (
        isinstance(value, dict)
        and len(value) <= 16
        and all(isinstance(k, str) and len(k) <= 64 and isinstance(v, str) and len(v) <= 512 for k, v in value.items())
    )


def _is_token_limit(value: Any) -> bool:
    return value == "inf" or (
        isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_OUTPUT_TOKENS
    )


def check(params: Any) -> Problem | None:
    """Why these `response` parameters are refused, or None when the emulator can run them."""
    if not isinstance(params, dict):
        return Problem("response must be an object.", "response")
    audio = params.get("audio")
    if audio is not None and not (isinstance(audio, dict) and isinstance(audio.get("output") or {}, dict)):
        return Problem("response.audio must be {output: {voice, format}}.", "response.audio")
    checks = (
        ("instructions", lambda v: isinstance(v, str), "a string"),
        ("metadata", _is_metadata, "at most 16 string pairs (keys up to 64 characters, values up to 512)"),
        ("output_modalities", lambda v: v in (["audio"], ["text"]), "['audio'] or ['text']"),
        ("max_output_tokens", _is_token_limit, f"an integer 1..{MAX_OUTPUT_TOKENS} or 'inf'"),
    )
    for name, valid, what in checks:
        if params.get(name) is not None and not valid(params[name]):
            return Problem(f"response.{name} must be {what}.", f"response.{name}")
    voice = _voice(params)
    if voice is not None and not isinstance(voice, str):
        return Problem("response.audio.output.voice must be a string.", "response.audio.output.voice")
    if params.get("conversation", "auto") not in ("auto", None):
        return Problem(
            "The emulator adds every response to the conversation: only conversation 'auto' is emulated.",
            "response.conversation",
            "unsupported",
        )
    return None


def resolve(session: dict, params: dict) -> ResponseSpec:
    """The response's settings: each of its own parameters, else the session's."""
    session_instructions = str(session.get("instructions") or "")
    own = params.get("instructions")
    return ResponseSpec(
        instructions=own if own is not None else session_instructions,
        overridden=own is not None and own != session_instructions,
        modalities=params.get("output_modalities") or session.get("output_modalities") or ["audio"],
        voice=_voice(params) or _voice(session) or DEFAULT_VOICE,
        metadata=params.get("metadata"),
        max_output_tokens=params.get("max_output_tokens") or session.get("max_output_tokens") or "inf",
    )
