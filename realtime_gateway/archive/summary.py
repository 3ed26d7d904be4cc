"""The per-call summary kept in the session row: counts per event type and the transcripts."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Mapping

from ..core import usage as usage_
from ..core.events import ASSISTANT_DONES, REPLAY_PREFIX
from .codec import join_property


def turn_text(event_type: str, event: Any) -> tuple[str, str] | None:
    """("user" | "assistant", text) when the event completes a turn's words, else None.

    Spoken user turns come as their transcription; typed ones as the user item's input_text.
    """
    if not isinstance(event, Mapping):
        return None
    if event_type == "conversation.item.input_audio_transcription.completed":
        text = event.get("transcript")
        return ("user", text) if isinstance(text, str) else None
    if event_type in ASSISTANT_DONES:
        text = event.get(ASSISTANT_DONES[event_type])
        return ("assistant", text) if isinstance(text, str) else None
    if event_type == "conversation.item.added":
        item = event.get("item")
        if isinstance(item, Mapping) and str(item.get("id") or "").startswith(REPLAY_PREFIX):
            return None  # an earlier call's words, replayed: that call's own turn, not this one's
        if isinstance(item, Mapping) and item.get("role") == "user":
            texts = [
                str(c["text"])
                for c in item.get("content") or []
                if isinstance(c, Mapping) and c.get("type") == "input_text" and c.get("text")
            ]
            return ("user", " ".join(texts)) if texts else None
    return None


DTMF = "input_audio_buffer.dtmf_event_received"


@dataclass
class CallSummary:
    counts: dict[str, int] = field(default_factory=dict)
    user: list[str] = field(default_factory=list)
    assistant: list[str] = field(default_factory=list)
    model: str | None = None
    voice: str | None = None
    usage: dict[str, float] = field(default_factory=dict)  # limits.usage.FIELDS, summed over the call

    def apply(self, event_type: str, event: Mapping[str, Any] | None) -> None:
        self.counts[event_type] = self.counts.get(event_type, 0) + 1
        if not isinstance(event, Mapping):
            return
        reported = usage_.usage_of(event_type, event)
        if reported:
            usage_.add(self.usage, reported)
        turn = turn_text(event_type, event)
        if turn is not None:
            (self.user if turn[0] == "user" else self.assistant).append(turn[1])
        if event_type in ("session.created", "session.updated") and isinstance(event.get("session"), Mapping):
            session = event["session"]
            self.model = session.get("model") or self.model
            output = (session.get("audio") or {}).get("output") or {}
            self.voice = output.get("voice") or self.voice

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def to_fields(self) -> dict[str, Any]:
        return {
            "counts": json.dumps(self.counts, sort_keys=True, separators=(",", ":")),
            "events": self.total,
            "dtmf_events": self.counts.get(DTMF, 0),  # the keys a phone caller pressed (SIP only)
            "user_transcript": "\n".join(self.user),
            "assistant_transcript": "\n".join(self.assistant),
            **usage_.to_row(self.usage),
        }

    @classmethod
    def from_fields(cls, row: Mapping[str, Any]) -> CallSummary:
        try:
            counts = json.loads(row.get("counts") or "{}")
        except ValueError:
            counts = {}
        # a long transcript is split over properties: a resumed call must go on from all of it
        user = join_property(row, "user_transcript")
        assistant = join_property(row, "assistant_transcript")
        return cls(
            counts={str(k): int(v) for k, v in counts.items()},
            user=user.split("\n") if user else [],
            assistant=assistant.split("\n") if assistant else [],
            model=row.get("model"),
            voice=row.get("voice"),
            usage=usage_.from_row(row),
        )
