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


# event ids remembered for exactly-once (a few minutes of a busy call). The sideband never replays,
# so a duplicate is a frame seen again within a reconnect or a resume, never one from long ago.
SEEN_WINDOW = 4096
RESUME_PAGE = 256  # index rows a page when a resume reads the window: a few small pages, not one big


def id_key(event_id: str) -> bytes:
    """A 64-bit digest of an event id (a collision among 10^5 ids has odds near 10^-10)."""
    return hashlib.blake2b(event_id.encode("utf-8", "surrogatepass"), digest_size=8).digest()


class IdWindow:
    """The digests of the last event ids, in one ring of bytes allocated up front (32 KiB for 4,096),
    split by the digest's first byte into 64 buckets of 64 slots, each replaced oldest first: a
    lookup scans one bucket's 512 bytes in C (under a µs), and no Python object is made per id. (A
    dict of them grew a long call's memory until it was full, and its small objects, allocated
    among each event's short-lived ones, kept the allocator's pools from being released.) Digests
    spread evenly, so an id stays about `size` events, and at least size/4 all but surely (some
    bucket taking 64 of 1,024 ids, 16 expected, has odds near 10^-18)."""

    BUCKETS = 64

    def __init__(self, size: int = SEEN_WINDOW) -> None:
        self._slots = max(1, size // self.BUCKETS)  # per bucket
        self._ring = bytearray(8 * self._slots * self.BUCKETS)
        self._next = [0] * self.BUCKETS
        self._used = [0] * self.BUCKETS

    def __contains__(self, key: bytes) -> bool:
        bucket = key[0] % self.BUCKETS
        start = 8 * self._slots * bucket
        end = start + 8 * self._used[bucket]
        i = self._ring.find(key, start, end)
        while i != -1:
            if i % 8 == 0:  # a whole slot, not bytes across two
                return True
            i = self._ring.find(key, i + 1, end)
        return False

    def add(self, key: bytes) -> None:
        bucket = key[0] % self.BUCKETS
        at = 8 * (self._slots * bucket + self._next[bucket])
        self._ring[at : at + 8] = key
        self._next[bucket] = (self._next[bucket] + 1) % self._slots
        self._used[bucket] = min(self._used[bucket] + 1, self._slots)

    def __len__(self) -> int:
        return sum(self._used)

    @property
    def nbytes(self) -> int:
        return len(self._ring)


class CallLog:
    def __init__(self, call_id: str, listener: int = 0) -> None:
        self.call_id, self.listener = call_id, listener
        self.summary = CallSummary()
        # the last SEEN_WINDOW archived event ids: a fixed size whatever the call's length (a set of
        # every id grew by ~165 B an event)
        self.seen = IdWindow()
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
        session_seq = int(session["head_seq"]) if session.get("head_seq") is not None else -1
        # only the tail, streamed: the window's ids and the last row (the chain goes on from it),
        # whatever the call's length. Reading every row's index at once made each resume of a long
        # call (50 of them together at the time box) a spike the allocator kept.
        last = self._load_window(archive, session_seq - SEEN_WINDOW)
        if last is None and session_seq >= SEEN_WINDOW:  # the tail gone (retention?): read them all
            last = self._load_window(archive, -1)
        if last is None:
            return
        seq, _, head, received_at = last
        self.next_seq, self.head, self.last_received_at = seq + 1, head, received_at
        self.committed_seq, self.committed_head = seq, head
        if seq > session_seq:  # a listener stopped between its last batch and its session write
            for rec in archive.read_events(self.call_id, after_seq=session_seq):
                if rec.source == "service":  # as live: marks are counted by _count, not the summary
                    self.summary.apply(rec.event_type, rec.event())
                self.gaps += rec.event_type == "listener.gap"
                self._count(rec.event_type, rec.event())

    def _load_window(self, archive: Archive, after_seq: int) -> tuple[int, str, str, str] | None:
        """Remember the ids of the rows after `after_seq` (the last SEEN_WINDOW); the last row."""
        last = None
        for last in archive.iter_index(self.call_id, after_seq, page_size=RESUME_PAGE):
            self._remember(last[1])
        return last

    def _remember(self, event_id: str) -> None:
        self.seen.add(id_key(event_id))

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
        self._remember(event_id)
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
