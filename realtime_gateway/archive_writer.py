"""The background writer of one call's archive: the socket reader hands it events and never waits.

It batches rows into entity-group transactions (flushed at least every `flush_interval`), assigns
arrival sequence numbers, chains hashes, drops events whose `event_id` is already archived (a
redelivered or continued message), keeps the session row's summary, and resumes a call from what
earlier listeners wrote.
"""
from __future__ import annotations

import hashlib
import json
import logging
import queue
import threading
import time
from typing import Any, Callable

from .archive import Archive, ArchiveError, EventRecord, event_entities, row_key, utc_iso
from .call_summary import CallSummary
from .hash_chain import genesis, link

log = logging.getLogger(__name__)

RETRY_DELAYS = (0.2, 0.5, 1.0, 2.0, 4.0)   # ~8 s of trying before the invocation fails
_STOP = object()


def id_key(event_id: str) -> int:
    """A 64-bit digest of an event id: a third of the string's memory in the seen-set of a long call
    (a collision among 10^5 ids has odds near 10^-10)."""
    return int.from_bytes(hashlib.blake2b(event_id.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "big")


class ArchiveWriter:
    def __init__(self, archive: Archive, call_id: str, day: str, session_fields: dict[str, Any],
                 listener: int = 0, flush_interval: float = 0.5, session_interval: float = 1.0,
                 sleep: Callable[[float], None] = time.sleep):
        self.archive, self.call_id, self.day = archive, call_id, day
        self.listener = listener
        self.flush_interval, self.session_interval = flush_interval, session_interval
        self._sleep = sleep
        self._initial = session_fields
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._pending: list[dict[str, Any]] = []
        self._pending_since: float | None = None
        self._session_dirty: dict[str, Any] = {}
        self._session_written = 0.0
        self.summary = CallSummary()
        self.seen: set[int] = set()   # id_key of every archived event id of the call
        self.next_seq = 0
        self.head = genesis(call_id)
        self.committed_seq, self.committed_head = -1, self.head
        self.last_received_at: str | None = None
        self.duplicates = 0
        self.gaps = 0
        self.session: dict[str, Any] = {}
        self.error: BaseException | None = None
        self.ready = threading.Event()        # session row opened and earlier events loaded
        self._thread = threading.Thread(target=self._run, name=f"archive-{call_id}", daemon=True)

    # ---- called from the reader thread ------------------------------------------------------------
    def start(self) -> "ArchiveWriter":
        self._thread.start()
        return self

    def event(self, raw: str, received: float) -> None:
        self._queue.put(("event", raw, received))

    def mark(self, event_type: str, payload: dict[str, Any], received: float) -> None:
        """A listener mark (gap, hand-over) archived in order with the events and chained like them."""
        self._queue.put(("mark", event_type, payload, received))

    def session_update(self, fields: dict[str, Any], urgent: bool = False) -> None:
        self._queue.put(("session", fields, urgent))

    def close(self, final_fields: dict[str, Any], timeout: float = 60.0) -> None:
        """Flush everything, write the final session fields; raise ArchiveError if writing failed.

        A backlog is drained as long as it shrinks: `timeout` bounds a writer that makes no progress.
        """
        self._queue.put(("session", final_fields, True))
        self._queue.put(_STOP)
        last = (-2, -1)
        while True:
            self._thread.join(timeout)
            if not self._thread.is_alive():
                break
            now = (self.committed_seq, self._queue.qsize())
            if now == last:
                raise ArchiveError(f"archive writer for {self.call_id} made no progress in {timeout:.0f} s")
            last = now
        if self.error is not None:
            raise ArchiveError(f"archive writes for {self.call_id} failed: {self.error}") from self.error

    @property
    def backlog(self) -> int:
        return self._queue.qsize()

    # ---- the writer thread -----------------------------------------------------------------------
    def _run(self) -> None:
        try:
            self._retry(self._open)
            self.ready.set()
            while True:
                timeout = None
                if self._pending_since is not None:
                    timeout = max(0.0, self._pending_since + self.flush_interval - time.monotonic())
                elif self._session_dirty:
                    timeout = max(0.0, self._session_written + self.session_interval - time.monotonic())
                try:
                    item = self._queue.get(timeout=timeout)
                except queue.Empty:
                    item = None
                if item is _STOP:
                    self._flush(force_session=True)
                    return
                if item is not None:
                    self._handle(item)
                due = self._pending_since is not None and (
                    time.monotonic() - self._pending_since >= self.flush_interval or len(self._pending) >= 100)
                if due or (self._session_dirty and not self._pending
                           and time.monotonic() - self._session_written >= self.session_interval):
                    self._flush()
        except BaseException as exc:  # reported to the reader through .error and close()
            log.error("archive writer for call %s stopped: %s", self.call_id, exc)
            self.error = exc
            self.ready.set()

    def _open(self) -> None:
        self.archive.ensure_tables()
        self.session = self.archive.open_session(self.call_id, self.day, self._initial)
        self.day = self.session.get("PartitionKey", self.day)
        self.summary = CallSummary.from_fields(self.session)
        self.gaps = int(self.session.get("gaps") or 0)
        index = self.archive.event_index(self.call_id)
        if index:
            # resume: earlier listeners wrote these; the chain continues from the last row
            self.seen = {id_key(event_id) for _, event_id, _, _ in index}
            seq, _, head, received_at = index[-1]
            self.next_seq, self.head, self.last_received_at = seq + 1, head, received_at
            self.committed_seq, self.committed_head = seq, head
            session_seq = int(self.session.get("head_seq", -1) if self.session.get("head_seq") is not None else -1)
            if seq > session_seq:   # a listener stopped between its last batch and its session write
                for rec in self.archive.read_events(self.call_id, after_seq=session_seq):
                    self.summary.apply(rec.event_type, rec.event())
                    if rec.event_type == "listener.gap":
                        self.gaps += 1

    def _handle(self, item: tuple) -> None:
        kind = item[0]
        if kind == "session":
            _, fields, urgent = item
            self._session_dirty.update(fields)
            if urgent:
                self._flush(force_session=True)
            return
        if kind == "event":
            _, raw, received = item
            try:
                event = json.loads(raw)
            except ValueError:
                event = None
            if isinstance(event, dict):
                event_type = str(event.get("type") or "unknown")
                event_id = str(event.get("event_id") or "")
            else:
                event_type, event_id = "invalid.json", ""
            if not event_id:
                event_id = f"noid-{self.listener}-{self.next_seq}"
            if id_key(event_id) in self.seen:
                self.duplicates += 1
                return
            self._append(event_id, event_type, raw, received, "service", event)
        elif kind == "mark":
            _, event_type, payload, received = item
            if event_type == "listener.gap":
                self.gaps += 1
                self._session_dirty["gaps"] = self.gaps
            raw = json.dumps({"type": event_type, **payload}, sort_keys=True)
            self._append(f"{event_type}-{self.listener}-{self.next_seq}", event_type, raw, received,
                         "listener", None)

    def _append(self, event_id: str, event_type: str, raw: str, received: float, source: str,
                event: Any) -> None:
        received_at = utc_iso(received)
        seq = self.next_seq
        digest = link(self.head, seq, event_id, event_type, received_at, raw)
        rec = EventRecord(seq, event_id, event_type, received_at, raw, digest, source)
        self._pending.extend(event_entities(self.call_id, rec, self.listener))
        self.seen.add(id_key(event_id))
        self.next_seq, self.head, self.last_received_at = seq + 1, digest, received_at
        if source == "service":
            self.summary.apply(event_type, event)
        if self._pending_since is None:
            self._pending_since = time.monotonic()

    def _flush(self, force_session: bool = False) -> None:
        if self._pending:
            pending = self._pending
            self._retry(lambda: self.archive.write_entities(pending))
            self._pending, self._pending_since = [], None
            self.committed_seq, self.committed_head = self.next_seq - 1, self.head
            self._session_dirty.update(self._summary_fields())
        if self._session_dirty and (force_session or
                                    time.monotonic() - self._session_written >= self.session_interval):
            fields = dict(self._session_dirty)
            self._retry(lambda: self.archive.update_session(self.call_id, self.day, fields))
            self._session_dirty.clear()
            self._session_written = time.monotonic()

    def _summary_fields(self) -> dict[str, Any]:
        fields = self.summary.to_fields()
        fields.update(head_seq=self.committed_seq, head_hash=self.committed_head,
                      head_row=row_key(self.committed_seq), last_event_at=self.last_received_at,
                      gaps=self.gaps)
        if self.summary.model:
            fields["model_reported"] = self.summary.model
        if self.summary.voice:
            fields["voice_reported"] = self.summary.voice
        return fields

    def _retry(self, op: Callable[[], None]) -> None:
        for attempt, delay in enumerate((0.0,) + RETRY_DELAYS):
            if delay:
                self._sleep(delay)
            try:
                op()
                return
            except ArchiveError:
                raise   # a conflict is not transient
            except Exception as exc:
                if attempt == len(RETRY_DELAYS):
                    raise ArchiveError(f"{type(exc).__name__}: {str(exc)[:300]}") from exc
                log.warning("archive write for call %s failed (%s), retrying", self.call_id,
                            type(exc).__name__)
