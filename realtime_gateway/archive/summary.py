"""The per-call summary kept in the session row: bounded fields only (counts per event type, turn
counts, usage). The words stay in the event rows (`turns.call_turns` reads them back): a transcript
rewritten into the row on every flush made a call's bytes written grow with the square of its length.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Mapping

from ..core import usage as usage_
from .codec import join_property
from .turns import DTMF, turn_text

# rows written before the change carry the transcripts themselves (split over properties above
# 32K characters); readers still join them, and a resumed call counts its turns from them
LEGACY_TRANSCRIPTS = ("user_transcript", "assistant_transcript")


@dataclass
class CallSummary:
    counts: dict[str, int] = field(default_factory=dict)
    user_turns: int = 0
    assistant_turns: int = 0
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
            if turn[0] == "user":
                self.user_turns += 1
            else:
                self.assistant_turns += 1
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
            "user_turns": self.user_turns,
            "assistant_turns": self.assistant_turns,
            **usage_.to_row(self.usage),
        }

    @classmethod
    def from_fields(cls, row: Mapping[str, Any]) -> CallSummary:
        try:
            counts = json.loads(row.get("counts") or "{}")
        except ValueError:
            counts = {}
        return cls(
            counts={str(k): int(v) for k, v in counts.items()},
            user_turns=_turns(row, "user"),
            assistant_turns=_turns(row, "assistant"),
            model=row.get("model"),
            voice=row.get("voice"),
            usage=usage_.from_row(row),
        )


def _turns(row: Mapping[str, Any], role: str) -> int:
    if row.get(f"{role}_turns") is not None:
        return int(row[f"{role}_turns"])
    text = join_property(row, f"{role}_transcript")  # raw chunks, or as session_view joined them
    return len(text.split("\n")) if text else 0
