"""`GET /api/calls/{call_id}`: whether the recorder is there yet (waiting / attached / ended)."""

from __future__ import annotations

from typing import Any

from .store import Archive

PUBLIC_FIELDS = (
    "attached_at",
    "attach_delay_ms",
    "ended_at",
    "end_reason",
    "created_at",
    "conversation_id",
    "continued_by",
    "history_ready_at",  # a successor's replayed history is in place: the page may switch to it
)


def call_status(archive: Archive, call_id: str) -> dict[str, Any]:
    """The call's recording state. Unknown calls read as `waiting`: the listener may not have
    started yet, and the status must not reveal which call ids exist beyond that."""
    row = archive.find_session(call_id)
    if row is None:
        return {"call_id": call_id, "state": "waiting", "recorded": False}
    state = row.get("state") or "waiting"
    if state not in ("waiting", "attached", "ended"):
        state = "waiting"
    out: dict[str, Any] = {"call_id": call_id, "state": state, "recorded": bool(row.get("attached_at"))}
    for name in PUBLIC_FIELDS:
        if row.get(name) not in (None, ""):
            out[name] = row[name]
    out["events"] = int(row.get("events") or 0)
    return out
