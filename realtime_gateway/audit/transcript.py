"""A call read as a person would: who said what and when, the turns' response latency, the gaps,
all derived from the archived events."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Iterable, Iterator, Mapping

from ..archive.codec import EventRecord
from ..archive.summary import turn_text


def when(rec: EventRecord) -> datetime | None:
    try:
        return datetime.fromisoformat(rec.received_at)
    except ValueError:
        return None


@dataclass(frozen=True)
class Line:
    at: str  # received_at of the event that completed it
    offset: float | None  # seconds from the call's first event
    who: str  # user | assistant | gap | handover | error
    text: str


@dataclass(frozen=True)
class Turn:
    n: int
    user_done_at: str
    basis: str  # "speech stopped" (spoken) or "user item" (typed)
    first_reply_at: str
    reply: str  # "audio" (output_audio_buffer.started) or "text" (first text delta)
    latency_ms: float


def _offset(rec: EventRecord, start: datetime | None) -> float | None:
    at = when(rec)
    return None if at is None or start is None else (at - start).total_seconds()


def clock(value: Any) -> str:
    """An ISO time as HH:MM:SS.mmm (UTC); anything else as it is."""
    try:
        return datetime.fromisoformat(str(value)).strftime("%H:%M:%S.%f")[:-3]
    except ValueError:
        return str(value)


def _mark_text(event: Any) -> str:
    """A listener mark in words: `handover, until 14:28:26.104, listener 1`."""
    if not isinstance(event, Mapping):
        return ""
    parts = [str(event["reason"])] if event.get("reason") else []
    parts += [f"{k} {clock(event[k])}" for k in ("from", "until") if event.get(k)]
    if isinstance(event.get("seconds"), (int, float)):
        parts.append(f"{event['seconds']:.3f} s")
    if event.get("continuation") is not None:
        parts.append(f"listener {event['continuation']}")
    if event.get("error"):
        parts.append(f"error: {event['error']}")
    return ", ".join(parts)


def transcript(records: list[EventRecord]) -> list[Line]:
    start = when(records[0]) if records else None
    lines = []
    for rec in records:
        event = rec.event()
        turn = turn_text(rec.event_type, event)
        if turn is not None:
            lines.append(Line(rec.received_at, _offset(rec, start), turn[0], turn[1]))
        elif rec.event_type == "listener.gap":
            lines.append(Line(rec.received_at, _offset(rec, start), "gap", "not recorded: " + _mark_text(event)))
        elif rec.event_type == "listener.handover":
            nxt = event.get("continuation") if isinstance(event, Mapping) else None
            text = f"handed over to listener {nxt}" if nxt is not None else _mark_text(event)
            lines.append(Line(rec.received_at, _offset(rec, start), "handover", text))
        elif rec.event_type == "error" and isinstance(event, Mapping):
            err = event.get("error")
            err = err if isinstance(err, Mapping) else {}
            lines.append(Line(rec.received_at, _offset(rec, start), "error", str(err.get("message") or "")))
    return lines


def format_transcript(lines: Iterable[Line]) -> Iterator[str]:
    for line in lines:
        offset = f"+{line.offset:8.3f} s" if line.offset is not None else " " * 11
        who = {"user": "User", "assistant": "Assistant"}.get(line.who, f"[{line.who}]")
        yield f"{line.at[11:23]} {offset}  {who}: {line.text}"


def _is_user_item(rec: EventRecord) -> bool:
    event = rec.event()
    item = event.get("item") if isinstance(event, Mapping) else None
    return rec.event_type == "conversation.item.added" and isinstance(item, Mapping) and item.get("role") == "user"


def turns(records: Iterable[EventRecord]) -> list[Turn]:
    """Response latency per turn: from the end of the user's speech (or the typed user item) to the
    first assistant audio (output_audio_buffer.started), or the first text delta in a text session."""
    out: list[Turn] = []
    pending: tuple[EventRecord, str] | None = None
    for rec in records:
        if rec.event_type == "input_audio_buffer.speech_stopped":
            pending = (rec, "speech stopped")
        elif pending is None and _is_user_item(rec):
            pending = (rec, "user item")
        elif pending and rec.event_type in ("output_audio_buffer.started", "response.output_text.delta"):
            start, end = when(pending[0]), when(rec)
            if start and end:
                out.append(
                    Turn(
                        len(out) + 1,
                        pending[0].received_at,
                        pending[1],
                        rec.received_at,
                        "audio" if rec.event_type.startswith("output_audio") else "text",
                        round((end - start).total_seconds() * 1000, 1),
                    )
                )
            pending = None
    return out


def spans(records: Iterable[EventRecord]) -> list[tuple[str, str, str]]:
    """(lane, from, until) of user speech, assistant audio and gaps, for the timeline chart."""
    pairs = {
        "input_audio_buffer.speech_started": ("user speech", True),
        "input_audio_buffer.speech_stopped": ("user speech", False),
        "output_audio_buffer.started": ("assistant audio", True),
        "output_audio_buffer.stopped": ("assistant audio", False),
    }
    open_: dict[str, str] = {}
    out = []
    for rec in records:
        if rec.event_type == "listener.handover":
            open_["gap"] = rec.received_at  # the next listener's gap mark says until when
        elif rec.event_type in pairs:
            lane, starts = pairs[rec.event_type]
            if starts:
                open_[lane] = rec.received_at
            elif lane in open_:
                out.append((lane, open_.pop(lane), rec.received_at))
        elif rec.event_type == "listener.gap":
            mark = rec.event()
            event = mark if isinstance(mark, Mapping) else {}
            since = str(event.get("from") or open_.pop("gap", rec.received_at))
            out.append(("gap", since, str(event.get("until") or rec.received_at)))
    return out
