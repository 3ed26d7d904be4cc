"""One call's archived log as the writer keeps it: sequence numbers, the hash chain, the event ids
already archived, and the session summary; resumed from what earlier listeners wrote."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from ..core.clock import utc_iso
from ..core.events import Event
from .chain import genesis, link
from .codec import EventRecord, event_entities, row_key
from .store import Archive
from .summary import CallSummary

# listener rows the session row counts (field name per row type); tool rows also count their errors
MARK_COUNTS = {
    "listener.tool": "tool_calls",
    "listener.guardrail": "guardrail_hits",
    "listener.policy": "policy_actions",
}


SEEN_WINDOW = 4096  # event ids remembered for exactly-once (a few minutes of a busy call)


def id_key(event_id: str) -> int:
    """A 64-bit digest of an event id: a third of the string's memory in the seen-set of a long call
    (a collision among 10^5 ids has odds near 10^-10)."""
    return int.from_bytes(hashlib.blake2b(event_id.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "big")


class CallLog:
    def __init__(self, call_id: str, listener: int = 0) -> None:
        self.call_id, self.listener = call_id, listener
        self.summary = CallSummary()
        # id_key of the last SEEN_WINDOW archived event ids: the sideband never replays, so a duplicate
        # is a frame seen again within a reconnect or a resume, never one from an hour ago; a bounded
        # window keeps a long call's memory flat (a set of every id grew by ~165 B an event)
        self.seen: dict[int, None] = {}
        self.next_seq = 0
        self.head = genesis(call_id)
        self.committed_seq, self.committed_head = -1, self.head
        self.last_received_at: str | None = None
        self.duplicates = 0
        self.gaps = 0
        self.marks: dict[str, int] = {}  # MARK_COUNTS fields, and tool_errors

    def resume(self, archive: Archive, session: dict[str, Any]) -> None:
        """Continue the chain after the rows earlier listeners wrote, and their summary."""
        self.summary = CallSummary.from_fields(session)
        self.gaps = int(session.get("gaps") or 0)
        self.marks = {f: int(session[f]) for f in (*MARK_COUNTS.values(), "tool_errors") if session.get(f)}
        index = archive.event_index(self.call_id)
        if not index:
            return
        self.seen = dict.fromkeys(id_key(event_id) for _, event_id, _, _ in index[-SEEN_WINDOW:])
        seq, _, head, received_at = index[-1]
        self.next_seq, self.head, self.last_received_at = seq + 1, head, received_at
        self.committed_seq, self.committed_head = seq, head
        session_seq = int(session["head_seq"]) if session.get("head_seq") is not None else -1
        if seq > session_seq:  # a listener stopped between its last batch and its session write
            for rec in archive.read_events(self.call_id, after_seq=session_seq):
                if rec.source == "service":  # as live: marks are counted by _count, not the summary
                    self.summary.apply(rec.event_type, rec.event())
                self.gaps += rec.event_type == "listener.gap"
                self._count(rec.event_type, rec.event())

    def event(self, ev: Event, received: float) -> list[dict[str, Any]]:
        """The rows for a service event, or none for one already archived."""
        event_id = ev.event_id or f"noid-{self.listener}-{self.next_seq}"
        if id_key(event_id) in self.seen:
            self.duplicates += 1
            return []
        self.summary.apply(ev.type, ev.data)
        return self._append(event_id, ev.type, ev.raw, received, "service")

    def mark(self, event_type: str, payload: dict[str, Any], received: float) -> list[dict[str, Any]]:
        """The rows for a listener mark (gap, hand-over), chained like the events."""
        self.gaps += event_type == "listener.gap"
        self._count(event_type, payload)
        raw = json.dumps({"type": event_type, **payload}, sort_keys=True)
        return self._append(f"{event_type}-{self.listener}-{self.next_seq}", event_type, raw, received, "listener")

    def _count(self, event_type: str, payload: Any) -> None:
        field = MARK_COUNTS.get(event_type)
        if field:
            self.marks[field] = self.marks.get(field, 0) + 1
            if event_type == "listener.tool" and isinstance(payload, dict) and not payload.get("ok"):
                self.marks["tool_errors"] = self.marks.get("tool_errors", 0) + 1

    def _append(self, event_id: str, event_type: str, raw: str, received: float, source: str) -> list[dict[str, Any]]:
        received_at = utc_iso(received)
        seq = self.next_seq
        digest = link(self.head, seq, event_id, event_type, received_at, raw)
        self.seen[id_key(event_id)] = None
        if len(self.seen) > SEEN_WINDOW:
            del self.seen[next(iter(self.seen))]  # the oldest
        self.next_seq, self.head, self.last_received_at = seq + 1, digest, received_at
        return event_entities(
            self.call_id, EventRecord(seq, event_id, event_type, received_at, raw, digest, source), self.listener
        )

    def committed(self) -> dict[str, Any]:
        """Everything written so far is durable: the session fields that say so."""
        self.committed_seq, self.committed_head = self.next_seq - 1, self.head
        fields = self.summary.to_fields()
        fields.update(
            head_seq=self.committed_seq,
            head_hash=self.committed_head,
            head_row=row_key(self.committed_seq),
            last_event_at=self.last_received_at,
            gaps=self.gaps,
        )
        fields.update(self.marks)
        if self.summary.model:
            fields["model_reported"] = self.summary.model
        if self.summary.voice:
            fields["voice_reported"] = self.summary.voice
        return fields
