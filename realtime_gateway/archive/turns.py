"""A call's words read back from its archived events: who said what, the assistant's as heard.

The session row keeps counts only; the events hold every word (the user's transcriptions and typed
items, the assistant's `*.done` texts, the items a successor replayed), so every reader (the audit
tools and API, a successor's replay) takes the words from them.

An interrupted reply: `conversation.item.truncated` says how much of the item's audio was played
(`audio_end_ms`); the service drops the item's transcript and sends no cut text, so the words heard
are the transcript cut in proportion to audio_end_ms over the item's audio length, back to whole
words. That length is the response's output audio tokens at the documented 50 ms a token; failing
that, the words at an average speaking rate.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from ..core.events import ASSISTANT_DONES, REPLAY_PREFIX

TRUNCATED = "conversation.item.truncated"
DTMF = "input_audio_buffer.dtmf_event_received"
ASSISTANT_AUDIO_MS_PER_TOKEN = 50  # the documented rate of assistant audio (user audio: 100 ms)
SPEECH_CHARS_PER_SECOND = 15  # when no usage says how long a reply's audio was
# how a reply cut short reads in a successor's history and the auditor's transcript
INTERRUPTED_MARK = "… [interrupted]"
ROLES = ("user", "assistant", "system")


def turn_text(event_type: str, event: Any) -> tuple[str, str] | None:
    """("user" | "assistant", text) when the event completes a turn's words, else None.

    Spoken user turns come as their transcription; typed ones as the user item's input_text.
    Replayed items (an earlier call's words) are not this call's turns.
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
            return None
        if isinstance(item, Mapping) and item.get("role") == "user":
            texts = [
                str(c["text"])
                for c in item.get("content") or []
                if isinstance(c, Mapping) and c.get("type") == "input_text" and c.get("text")
            ]
            return ("user", " ".join(texts)) if texts else None
    return None


def replayed_turn(event_type: str, event: Any) -> tuple[str, str] | None:
    """(role, text) of an item a successor's listener replayed (its id starts with replay_)."""
    item = event.get("item") if isinstance(event, Mapping) else None
    if event_type != "conversation.item.added" or not isinstance(item, Mapping):
        return None
    if not str(item.get("id") or "").startswith(REPLAY_PREFIX) or item.get("role") not in ROLES:
        return None
    text = " ".join(str(c.get("text")) for c in item.get("content") or [] if isinstance(c, Mapping) and c.get("text"))
    return (str(item["role"]), text) if text else None


def cut_heard(text: str, audio_end_ms: int, audio_ms: int) -> str:
    """The words of `text` heard in its first `audio_end_ms` of `audio_ms`: proportional, and a word
    cut in the middle counts as not heard."""
    if audio_ms <= 0 or audio_end_ms >= audio_ms:
        return text
    keep = max(0, round(len(text) * audio_end_ms / audio_ms))
    cut = text[:keep]
    if keep < len(text) and not text[keep].isspace():
        cut = cut.rsplit(" ", 1)[0] if " " in cut else ""
    return cut.rstrip()


def speech_ms(text: str) -> int:
    return round(len(text) * 1000 / SPEECH_CHARS_PER_SECOND)


def response_audio(event: Any) -> dict[str, int]:
    """{item id: audio ms} of a `response.done`'s spoken message: its output audio tokens at 50 ms
    each (a response speaks through one message; with several, the first takes the count)."""
    response = event.get("response") if isinstance(event, Mapping) else None
    if not isinstance(response, Mapping):
        return {}
    usage = response.get("usage")
    details = usage.get("output_token_details") if isinstance(usage, Mapping) else None
    tokens = details.get("audio_tokens") if isinstance(details, Mapping) else None
    if not isinstance(tokens, int) or isinstance(tokens, bool) or tokens <= 0:
        return {}
    for item in response.get("output") or []:
        if isinstance(item, Mapping) and item.get("type") == "message" and item.get("id"):
            return {str(item["id"]): tokens * ASSISTANT_AUDIO_MS_PER_TOKEN}
    return {}


def truncation(event: Any) -> tuple[str, int] | None:
    """(item id, audio_end_ms) of a well-formed `conversation.item.truncated`."""
    if not isinstance(event, Mapping):
        return None
    item_id, end = event.get("item_id"), event.get("audio_end_ms")
    if not isinstance(item_id, str) or not isinstance(end, int) or isinstance(end, bool) or end < 0:
        return None
    return item_id, end


@dataclass(frozen=True)
class Turn:
    role: str  # user | assistant | system
    text: str  # as heard: an interrupted reply cut where its audio stopped
    item_id: str = ""
    replayed: bool = False  # an earlier call's words, replayed into this call
    said: str | None = None  # an interrupted reply: the whole text the model produced
    heard_ms: int | None = None  # an interrupted reply: the audio played (audio_end_ms)
    audio_ms: int | None = None  # an interrupted reply: its whole audio (estimated)

    @property
    def interrupted(self) -> bool:
        return self.heard_ms is not None


def call_turns(events: Iterable[tuple[str, Any]]) -> list[Turn]:
    """Every turn of a call in order, from its archived (event type, event) pairs: replayed items as
    they were replayed, the call's own words, interrupted replies cut to what was heard. One pass
    (a truncation arrives after the reply it cuts), then the cuts."""
    turns: list[Turn] = []
    audio_ms: dict[str, int] = {}
    cut_at: dict[str, int] = {}
    for event_type, event in events:
        replayed = replayed_turn(event_type, event)
        if replayed is not None:
            turns.append(Turn(*replayed, item_id=str(event["item"]["id"]), replayed=True))
            continue
        if event_type == "response.done":
            audio_ms.update(response_audio(event))
        elif event_type == TRUNCATED:
            found = truncation(event)
            if found is not None:  # the shortest cut holds: audio_end_ms counts from the item's start
                cut_at[found[0]] = min(found[1], cut_at.get(found[0], found[1]))
        turn = turn_text(event_type, event)
        if turn is not None:
            turns.append(Turn(*turn, item_id=str(event.get("item_id") or "")))
    return [_heard(t, cut_at, audio_ms) for t in turns]


def _heard(turn: Turn, cut_at: Mapping[str, int], audio_ms: Mapping[str, int]) -> Turn:
    if turn.role != "assistant" or turn.replayed or turn.item_id not in cut_at:
        return turn
    end = cut_at[turn.item_id]
    length = audio_ms.get(turn.item_id) or speech_ms(turn.text)
    return Turn(
        "assistant", cut_heard(turn.text, end, length), turn.item_id, said=turn.text, heard_ms=end, audio_ms=length
    )
