"""The service's events as the listener reads them: each sideband frame parsed and classified once,
then handed, typed, to the archive writer, the call's control, usage and the turn clock."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

# the assistant's words: streamed deltas, and the done event with the field holding the whole text
ASSISTANT_DELTAS = ("response.output_audio_transcript.delta", "response.output_text.delta")
ASSISTANT_DONES = {"response.output_audio_transcript.done": "transcript", "response.output_text.done": "text"}
REPLAY_PREFIX = "replay_"  # the ids of history items a successor call's listener replays
INVALID = "invalid.json"  # a frame that is not a JSON object still gets a type, and is archived as received


@dataclass(frozen=True, slots=True)
class Event:
    raw: str  # the frame exactly as received: what the archive keeps and hashes
    type: str
    event_id: str
    data: Any  # the parsed frame (a dict for every well-formed event)

    @property
    def fields(self) -> dict[str, Any]:
        return self.data if isinstance(self.data, dict) else {}


def parse(raw: str) -> Event:
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):  # RecursionError: nested deeper than the parser goes
        return Event(raw, INVALID, "", None)
    if not isinstance(data, dict):
        return Event(raw, INVALID, "", data)
    return Event(raw, _identifier(data.get("type") or "unknown"), _identifier(data.get("event_id") or ""), data)


def _identifier(value: Any) -> str:
    """A type or id as a table-safe string (lone surrogates from hostile frames replaced)."""
    return str(value).encode("utf-8", "surrogatepass").decode("utf-8", "replace")
