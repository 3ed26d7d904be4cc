"""A successor call's history: the conversation so far, replayed into the new session before its
first response, as the person heard it, with nothing from the browser in it.

The service ends every session at its cap (30 minutes on Azure); the page then continues the
conversation in a new call (`POST /api/connect?continue=`). The predecessor's archived events hold
the whole history: its own turns and the items its own listener replayed (archive/turns.py reads
them back, an interrupted reply cut to what was heard). Each becomes a
`conversation.item.create` with a fixed id (`replay_NNNN`), so a listener that resumes after a crash
sends only the items the service has not added yet.
"""

from __future__ import annotations

from typing import Any, Iterable

from ..archive.store import Archive
from ..archive.turns import INTERRUPTED_MARK, call_turns
from ..core.events import REPLAY_PREFIX

PARTS = {"user": "input_text", "assistant": "output_text", "system": "input_text"}


def turns(events: Iterable[tuple[str, Any]]) -> list[tuple[str, str]]:
    """(role, text) in order from a call's archived (event type, event) pairs: replayed items first
    as they were replayed, then the call's own words. A reply the person interrupted comes as far
    as they heard it, marked (INTERRUPTED_MARK); one cut before a word was heard is left out."""
    out: list[tuple[str, str]] = []
    for turn in call_turns(events):
        if not turn.text.strip():
            continue
        out.append((turn.role, turn.text + INTERRUPTED_MARK if turn.interrupted else turn.text))
    return out


def history(archive: Archive, call_id: str) -> list[tuple[str, str]]:
    return turns((rec.event_type, rec.event()) for rec in archive.read_events(call_id))


def already_added(archive: Archive, call_id: str) -> set[str]:
    """The replayed item ids the service already added to this call (a resumed listener skips them)."""
    ids = set()
    for rec in archive.read_events(call_id):
        if rec.event_type == "conversation.item.added":
            item = (rec.event() or {}).get("item") or {}
            if str(item.get("id") or "").startswith(REPLAY_PREFIX):
                ids.add(str(item["id"]))
    return ids


def items(history: list[tuple[str, str]]) -> list[dict[str, Any]]:
    return [
        {
            "type": "conversation.item.create",
            "item": {
                "id": f"{REPLAY_PREFIX}{n:04d}",
                "type": "message",
                "role": role,
                "content": [{"type": PARTS[role], "text": text}],
            },
        }
        for n, (role, text) in enumerate(history)
    ]
