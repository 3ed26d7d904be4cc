"""The background writer of one call's archive: the socket reader hands it events and never waits.

It batches rows into entity-group transactions (flushed at least every `flush_interval`) and keeps
the session row up to date (at most every `session_interval`, or at once when urgent); the call's
chain, dedup and summary live in `CallLog`.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from typing import Any, Callable

from .. import telemetry
from ..core.clock import day_of, utc_iso
from ..core.events import Event
from ..core.message import CallMessage
from ..retry import Backoff
from .call_log import CallLog
from .codec import entity_bytes
from .store import Archive, ArchiveError
from .summary import CallSummary

log = logging.getLogger(__name__)

FLUSH_ROWS = 100
# The SDK's policy retries what it deems safe (not a POST answered 5xx, every archive write being a
# POST, and not a refused connection for more than about 1.5 s). The writer holds the rows, and
# they are idempotent, so it retries any failed write (a 5xx, a dropped connection, a 401 while a
# token refreshes, a proxy's error page) for up to this long before the invocation fails.
RETRY_SECONDS, RETRY_ATTEMPTS = 10.0, 6
_STOP = object()
BYTES_FIELD = "bytes_written"  # on the session row


def first_session_fields(msg: CallMessage, strict: bool) -> dict[str, Any]:
    """A call's first session-row fields, from its queue message (the gateway's and the writer's)."""
    principal = msg.principal or {}
    return {
        "state": "waiting",
        "created_at": utc_iso(msg.started_at),
        "deadline": utc_iso(msg.deadline),
        "origin": msg.origin or "",
        "principal": json.dumps(principal, sort_keys=True) if principal else "",
        "principal_id": str(principal.get("id") or principal.get("userId") or ""),
        "principal_name": str(principal.get("name") or principal.get("userDetails") or ""),
        "request_id": msg.request_id or "",
        "model": msg.model or "",
        "voice": msg.voice or "",
        "continuations": msg.continuation,
        "strict": strict,
        "slot": msg.slot or "",
        "capability_sha256": msg.capability_sha256 or "",
        "conversation_id": msg.conversation_id or msg.call_id,
        "continues": msg.continues or "",
        "conversation_started_at": utc_iso(msg.conversation_started_at or msg.started_at),
        "channel": msg.channel or "webrtc",
        **(
            {"caller": msg.caller or "", "called": msg.called or "", "sip_call_id": msg.sip_call_id or ""}
            if msg.channel == "sip"
            else {}
        ),
    }


class ArchiveWriter:
    def __init__(
        self,
        archive: Archive,
        call_id: str,
        day: str,
        session_fields: dict[str, Any],
        listener: int = 0,
        flush_interval: float = 0.5,
        session_interval: float = 1.0,
        sleep: Callable[[float], None] = time.sleep,
        on_commit: Callable[[dict[str, float], dict[str, float]], None] | None = None,
    ):
        self.archive, self.call_id, self.day = archive, call_id, day
        self.flush_interval, self.session_interval = flush_interval, session_interval
        self._sleep = sleep
        self._initial = session_fields
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._pending: list[dict[str, Any]] = []
        self._pending_since: float | None = None
        self._session_dirty: dict[str, Any] = {}
        self._session_written = 0.0
        self.call_log = CallLog(call_id, listener)
        self.session: dict[str, Any] = {}
        self.usage_before: dict[str, float] = {}  # the call's usage as earlier listeners left it
        # (usage now, usage_before) after each durable batch that changed the call's usage (limits)
        self._on_commit = on_commit
        self._committed_usage: dict[str, float] = {}
        self.error: BaseException | None = None
        self.ready = threading.Event()  # session row opened and earlier events loaded
        self._thread = threading.Thread(target=self._run, name=f"archive-{call_id}", daemon=True)
        self._trace = telemetry.current()  # the listener's span: flushes are its children
        self._turns = telemetry.TurnClock()
        self._pending_events = 0
        # the call's rows as sent (event rows and session-row updates, estimated as the service
        # counts them), kept on the session row: what a call costs in storage writes, per event
        self.bytes_written = 0

    @classmethod
    def for_call(cls, archive: Archive, msg: CallMessage, strict: bool, **kw: Any) -> ArchiveWriter:
        """The writer of one listener of `msg`'s call (not started)."""
        fields = first_session_fields(msg, strict)
        return cls(archive, msg.call_id, day_of(msg.started_at), fields, listener=msg.continuation, **kw)

    # ---- called from the reader thread ------------------------------------------------------------
    def start(self) -> ArchiveWriter:
        self._thread.start()
        return self

    def event(self, ev: Event, received: float) -> None:
        self._queue.put(("event", ev, received))

    def mark(self, event_type: str, payload: dict[str, Any], received: float) -> None:
        """A listener mark (gap, hand-over) archived in order with the events and chained like them."""
        self._queue.put(("mark", event_type, payload, received))
        telemetry.mark(event_type, payload)

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
            now = (self.call_log.committed_seq, self._queue.qsize())
            if now == last:
                raise ArchiveError(f"archive writer for {self.call_id} made no progress in {timeout:.0f} s")
            last = now
        if self.error is not None:
            raise ArchiveError(f"archive writes for {self.call_id} failed: {self.error}") from self.error

    @property
    def backlog(self) -> int:
        return self._queue.qsize()

    @property
    def duplicates(self) -> int:
        return self.call_log.duplicates

    # ---- the writer thread -----------------------------------------------------------------------
    def _run(self) -> None:
        telemetry.attach(self._trace)
        try:
            self._write(self._open)
            self.ready.set()
            while True:
                try:
                    item = self._queue.get(timeout=self._wait_time())
                except queue.Empty:
                    item = None
                if item is _STOP:
                    self._flush(force_session=True)
                    return
                if item is not None:
                    self._handle(item)
                now = time.monotonic()
                due = self._pending_since is not None and (
                    now - self._pending_since >= self.flush_interval or len(self._pending) >= FLUSH_ROWS
                )
                if due or (
                    self._session_dirty and not self._pending and now - self._session_written >= self.session_interval
                ):
                    self._flush()
        except BaseException as exc:  # reported to the reader through .error and close()
            log.error("archive writer for call %s stopped: %s", self.call_id, exc)
            self.error = exc
            self.ready.set()

    def _wait_time(self) -> float | None:
        if self._pending_since is not None:
            return max(0.0, self._pending_since + self.flush_interval - time.monotonic())
        if self._session_dirty:
            return max(0.0, self._session_written + self.session_interval - time.monotonic())
        return None

    def _open(self) -> None:
        self.archive.ensure_tables()
        self.session = self.archive.open_session(self.call_id, self.day, self._initial)
        self.day = self.session.get("PartitionKey", self.day)
        self.call_log.resume(self.archive, self.session)
        self.usage_before = CallSummary.from_fields(self.session).usage
        self.bytes_written = int(self.session.get(BYTES_FIELD) or 0)
        self._committed_usage = dict(self.usage_before)

    def _handle(self, item: tuple) -> None:
        kind = item[0]
        if kind == "session":
            _, fields, urgent = item
            self._session_dirty.update(fields)
            if urgent:
                self._flush(force_session=True)
            return
        if kind == "event":
            _, ev, received = item
            rows = self.call_log.event(ev, received)
            self._turns.see(ev.type, ev.data, received)
        else:
            rows = self.call_log.mark(*item[1:])
        if rows:
            self._pending_events += 1
            self._pending.extend(rows)
            if self._pending_since is None:
                self._pending_since = time.monotonic()

    def _flush(self, force_session: bool = False) -> None:
        if self._pending:
            pending = self._pending
            with telemetry.span("archive.flush", rows=len(pending), events=self._pending_events):
                self._write(lambda: self.archive.write_entities(pending))
            self.bytes_written += sum(entity_bytes(e) for e in pending)
            telemetry.count(telemetry.EVENTS_ARCHIVED, self._pending_events)
            self._pending, self._pending_since, self._pending_events = [], None, 0
            self._session_dirty.update(self.call_log.committed())
            usage = self.call_log.summary.usage  # this thread's: exactly the committed events
            if self._on_commit is not None and usage != self._committed_usage:
                self._committed_usage = dict(usage)
                self._on_commit(dict(usage), self.usage_before)
        if self._session_dirty and (force_session or time.monotonic() - self._session_written >= self.session_interval):
            fields = dict(self._session_dirty)
            self.bytes_written += entity_bytes(fields)
            fields[BYTES_FIELD] = self.bytes_written
            self._write(lambda: self.archive.update_session(self.call_id, self.day, fields))
            self._session_dirty.clear()
            self._session_written = time.monotonic()

    def _write(self, op: Callable[[], None]) -> None:
        started = time.monotonic()
        backoff = Backoff(0.2, 2.0, time.monotonic() + RETRY_SECONDS, sleep=self._sleep)
        while True:
            try:
                op()
                telemetry.observe(telemetry.WRITE_LATENCY, (time.monotonic() - started) * 1000)
                return
            except ArchiveError:
                raise  # a conflict is not transient
            except Exception as exc:
                status = getattr(exc, "status_code", None)
                if backoff.attempts >= RETRY_ATTEMPTS or not backoff.wait():
                    raise ArchiveError(f"{type(exc).__name__}: {str(exc)[:300]}") from exc
                log.warning(
                    "archive write for call %s failed (%s %s), retrying", self.call_id, type(exc).__name__, status or ""
                )
