"""A call's conversation as the model would see it: each item's role and text, in order.

Kept so replies can depend on history (the "what did I say first?" trigger in replies.py), the
admin route can show what reached the model, and `conversation.item.truncate` has a transcript to cut.

Truncation: the service drops the whole transcript of a truncated item (so no text the user did
not hear stays in context); the emulator keeps the part heard instead, cut in proportion to
`audio_end_ms` over the item's audio length and then back to whole words, so a test can see the
cut. The item's audio length becomes `audio_end_ms`, so a second truncation cuts what is left.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .overrides import Problem

# content part types each role may carry (the GA schema: `text`/`audio` are the beta's names)
CONTENT_TYPES = {
    "user": ("input_text", "input_audio", "input_image"),
    "assistant": ("output_text", "output_audio"),
    "system": ("input_text",),
}


def item_text(item: dict) -> str:
    """What an item says: its text or transcript parts, a function call's arguments or output."""
    if item.get("type") == "function_call":
        return str(item.get("arguments") or "")
    if item.get("type") == "function_call_output":
        return str(item.get("output") or "")
    parts = [p.get("text") or p.get("transcript") or "" for p in item.get("content") or [] if isinstance(p, dict)]
    return " ".join(str(p) for p in parts if p)


def content_problem(item: dict) -> Problem | None:
    """Why a client's message item cannot be added (a content type its role does not take)."""
    content = item.get("content")
    if not isinstance(content, list) or not content:
        return Problem("A message item needs a non-empty content list.", "item.content")
    allowed = CONTENT_TYPES[item["role"]]
    for i, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind not in allowed:
            return Problem(
                f"A {item['role']} message's content types are {', '.join(allowed)}; got {kind!r}.",
                f"item.content[{i}].type",
            )
        if kind.endswith("_text") and not isinstance(part.get("text"), str):
            return Problem(f"A {kind} part needs its text.", f"item.content[{i}].text")
    return None


def cut_transcript(text: str, audio_end_ms: int, audio_ms: int) -> str:
    """The words of `text` heard in its first `audio_end_ms` of `audio_ms` (proportional, whole words)."""
    if audio_ms <= 0 or audio_end_ms >= audio_ms:
        return text
    keep = round(len(text) * audio_end_ms / audio_ms)
    cut = text[:keep]
    if keep < len(text) and not text[keep].isspace():
        cut = cut.rsplit(" ", 1)[0] if " " in cut else ""  # a word cut in the middle was not heard
    return cut.rstrip()


@dataclass
class Entry:
    id: str
    type: str
    role: str | None
    text: str
    audio_ms: int | None = None  # a spoken assistant item: how long its audio is


class Conversation:
    def __init__(self) -> None:
        self._entries: dict[str, Entry] = {}  # insertion order is conversation order

    def add(self, item: dict, audio_ms: int | None = None) -> None:
        """Add an item, or update one already added (its text once it is done), keeping its place."""
        entry = Entry(str(item["id"]), str(item.get("type")), item.get("role"), item_text(item), audio_ms)
        self._entries[entry.id] = entry

    def first_user_text(self, unless: Callable[[str], bool] | None = None) -> str | None:
        """The first user message with words, skipping those `unless(text)` rejects."""
        for entry in self._entries.values():
            if entry.role == "user" and entry.text and not (unless and unless(entry.text)):
                return entry.text
        return None

    def truncate(self, item_id: Any, content_index: Any, audio_end_ms: Any) -> Problem | None:
        """Cut a spoken assistant item's transcript at `audio_end_ms`; why not, when it cannot."""
        entry = self._entries.get(item_id) if isinstance(item_id, str) else None
        if entry is None:
            return Problem(f"No item with id {item_id!r} in the conversation.", "item_id")
        if entry.role != "assistant" or entry.audio_ms is None:
            return Problem("Only an assistant message with audio can be truncated.", "item_id")
        if content_index != 0 or isinstance(content_index, bool):
            return Problem("The item has one content part: content_index must be 0.", "content_index")
        if not isinstance(audio_end_ms, int) or isinstance(audio_end_ms, bool) or audio_end_ms < 0:
            return Problem("audio_end_ms must be a non-negative integer.", "audio_end_ms")
        if audio_end_ms > entry.audio_ms:
            return Problem(f"audio_end_ms is beyond the item's audio ({entry.audio_ms} ms).", "audio_end_ms")
        entry.text = cut_transcript(entry.text, audio_end_ms, entry.audio_ms)
        entry.audio_ms = audio_end_ms
        return None

    def view(self) -> dict:
        """The admin route's answer: every item's id, type, role, text (and audio length, if spoken)."""
        return {"items": [vars(entry).copy() for entry in self._entries.values()]}
