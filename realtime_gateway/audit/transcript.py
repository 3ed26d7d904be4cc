"""A call read as a person would: who said what and when (an interrupted reply with how much of it
was heard, a phone caller's key presses), the turns' response latency, the gaps, all derived from
the archived events; a conversation's calls stitched into one, on one clock, each call's start marked."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Iterable, Iterator, Mapping, Sequence

from ..archive.codec import EventRecord
from ..archive.turns import DTMF, TRUNCATED, cut_heard, response_audio, speech_ms, truncation, turn_text


def when(rec: EventRecord) -> datetime | None:
    try:
        return datetime.fromisoformat(rec.received_at)
    except ValueError:
        return None


@dataclass(frozen=True)
class Line:
    at: str  # received_at of the event that completed it
    offset: float | None  # seconds from the call's (or the conversation's) first event
    who: str  # user | assistant | interrupted | key | gap | handover | error | call
    text: str


@dataclass(frozen=True)
class Turn:
    n: int
    user_done_at: str
    basis: str  # "speech stopped" (spoken) or "user item" (typed)
    first_reply_at: str
    reply: str  # "audio" (output_audio_buffer.started) or "text" (first text delta)
    latency_ms: float
    call: int = 1  # which call of a conversation (1 for a call read alone)


def _offset(rec: EventRecord, start: datetime | None) -> float | None:
    return _since(rec.received_at, start)


def _since(at: str, start: datetime | None) -> float | None:
    try:
        moment = datetime.fromisoformat(at)
    except ValueError:
        return None
    return None if start is None else (moment - start).total_seconds()


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


def key_pressed(event: Any) -> str | None:
    """The key of a phone caller's DTMF event (`input_audio_buffer.dtmf_event_received`)."""
    key = event.get("event") if isinstance(event, Mapping) else None
    return str(key) if isinstance(key, str) and key else None


def transcript(records: list[EventRecord], start: datetime | None = None) -> list[Line]:
    """`start`: what offsets count from (default: the first record; a conversation's first call)."""
    start = start or (when(records[0]) if records else None)
    lines = []
    replies: dict[str, str] = {}  # item id -> the assistant's words, for a truncation that cuts them
    audio: dict[str, int] = {}  # item id -> audio ms, from response.done's usage
    for rec in records:
        event = rec.event()
        turn = turn_text(rec.event_type, event)
        if turn is not None:
            lines.append(Line(rec.received_at, _offset(rec, start), turn[0], turn[1]))
            if turn[0] == "assistant" and isinstance(event, Mapping) and event.get("item_id"):
                replies[str(event["item_id"])] = turn[1]
        elif rec.event_type == "response.done":
            audio.update(response_audio(event))
        elif rec.event_type == TRUNCATED and (cut := truncation(event)) is not None:
            lines.append(Line(rec.received_at, _offset(rec, start), "interrupted", _interrupted(*cut, replies, audio)))
        elif rec.event_type == DTMF and (key := key_pressed(event)) is not None:
            lines.append(Line(rec.received_at, _offset(rec, start), "key", f"pressed {key}"))
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


def _interrupted(item_id: str, end_ms: int, replies: Mapping[str, str], audio: Mapping[str, int]) -> str:
    said = replies.get(item_id)
    if said is None:
        return f"reply {item_id} cut at {end_ms / 1000:.1f} s"
    length = audio.get(item_id) or speech_ms(said)
    heard = cut_heard(said, end_ms, length)
    return f"the reply was cut at {end_ms / 1000:.1f} s of about {length / 1000:.1f} s; heard: “{heard}”"


Call = tuple[Mapping[str, Any], list[EventRecord]]  # a conversation's call: its session row, its events


def conversation_start(calls: Sequence[Call]) -> datetime | None:
    return next((when(records[0]) for _, records in calls if records), None)


def boundary(n: int, calls: Sequence[Call]) -> tuple[str, str]:
    """(when, what) of the start of the conversation's n-th call (from 1)."""
    session, records = calls[n - 1]
    call_id = str(session.get("call_id") or session.get("RowKey") or "")
    at = records[0].received_at if records else str(session.get("created_at") or "")
    what = f"call {n} of {len(calls)}: {call_id}"
    if session.get("continues"):
        what += f", continues {session['continues']}"
    return at, what


def conversation_transcript(calls: Sequence[Call]) -> list[Line]:
    """Every call's lines, first call to last, on the conversation's clock; each call's start marked."""
    start = conversation_start(calls)
    lines: list[Line] = []
    for n, (_, records) in enumerate(calls, 1):
        at, what = boundary(n, calls)
        lines.append(Line(at, _since(at, start), "call", what))
        lines += transcript(records, start)
    return lines


def conversation_turns(calls: Sequence[Call]) -> list[Turn]:
    """Each call's turns (a turn never spans two calls), numbered on through the conversation."""
    out: list[Turn] = []
    for n, (_, records) in enumerate(calls, 1):
        out += [replace(t, n=len(out) + i + 1, call=n) for i, t in enumerate(turns(records))]
    return out


LABELS = {"user": "User", "assistant": "Assistant", "key": "Keypad"}


def format_transcript(lines: Iterable[Line]) -> Iterator[str]:
    for line in lines:
        offset = f"+{line.offset:8.3f} s" if line.offset is not None else " " * 11
        if line.who == "call":  # a conversation's next call begins
            yield f"{line.at[11:23]} {offset}  --- {line.text} ---"
            continue
        who = LABELS.get(line.who, f"[{line.who}]")
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
