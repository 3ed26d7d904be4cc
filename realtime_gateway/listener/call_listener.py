"""The sideband listener for one call: attach first, archive every event, control the call, hand over.

One invocation holds one call for at most the time box. The socket opens before anything else (the
sideband never replays what was missed); the archive writer runs on its own thread so a slow write
never stalls the reader. At the call's deadline the listener hangs up through the service; when the
time box runs out on a live call it hands over with a continuation message.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Protocol

from .. import telemetry
from ..archive.store import PAGE_HANGUP_FIELD, Archive, ArchiveError
from ..archive.writer import ArchiveWriter
from ..core.clock import day_of, utc_iso
from ..core.events import parse
from ..core.message import CallMessage
from ..core.result import EndReason, ListenerResult, Outcome
from ..retry import Backoff
from ..settings import Settings
from . import replay
from .call_tools import CallTools
from .control import Control
from .guardrails import Guardrail
from .sideband import CallGone, Sideband, SidebandClosed, SidebandError, SidebandLost, sideband_url
from .tools import ToolBox

log = logging.getLogger(__name__)

RECV_SLICE = 0.25  # how often the reader looks at the clock between frames
BACKOFF_FIRST, BACKOFF_MAX = 0.2, 5.0
HANGUP_GRACE = 5.0  # after hanging up, keep reading this long for the closing events
ENDED_CODES: dict[int, EndReason] = {1000: "ended", 1001: "limit"}  # 1001: the service's session limit


def ended_reason(closed: SidebandClosed) -> EndReason | None:
    """How a close frame ended the call; None for codes that mean a broken connection."""
    if closed.code not in ENDED_CODES:
        return None
    if "hang" in closed.reason.lower():
        return "hangup"  # someone hung up through the service (the gateway's route)
    return ENDED_CODES[closed.code]


class Upstream(Protocol):
    """What the listener needs from the service besides the socket."""

    def headers(self) -> Mapping[str, str]: ...
    def hangup(self, call_id: str) -> None: ...
    def refer(self, call_id: str, target_uri: str, deadline: float | None = None) -> None: ...


@dataclass(frozen=True)
class ListenerConfig:
    """How a listener runs, from the settings (`from_settings`) or a test's own values."""

    time_box: float  # seconds one invocation holds the call (LISTENER_TIME_BOX_SECONDS)
    strict: bool = False  # STRICT_RECORDING: a call without a sideband within attach_limit is hung up
    attach_limit: float = 15.0
    session_update: Mapping[str, Any] | None = None  # LISTENER_SESSION_UPDATE, sent on every attach
    flush_interval: float = 0.5  # the archive writer's batching window
    policy: Mapping[str, Any] | None = None  # the session the call must keep (policy.py); None: not held
    minted: Mapping[str, Any] | None = None  # that session before session_update: what session.created shows
    policy_max_violations: int = 0

    @classmethod
    def from_settings(cls, s: Settings) -> ListenerConfig:
        return cls(
            time_box=s.listener_time_box,
            strict=s.strict_recording,
            attach_limit=s.attach_limit_seconds,
            session_update=s.sideband_session_update,
            policy=s.enforced_policy() if s.policy_enforce else None,
            minted=s.session_policy,
            policy_max_violations=s.policy_max_violations,
        )


class CallHooks(Protocol):
    """What the listener tells the stages beside it (the limits' accounting), on its own threads."""

    def attached(self, hang_up: Callable[[EndReason, str], None]) -> None:
        """The call is live; `hang_up` ends it through the service from any thread."""

    def committed(self, usage: dict[str, float], usage_before: dict[str, float]) -> None:
        """A batch that changed the call's usage is durable (on the archive writer's thread)."""


@dataclass(frozen=True)
class Ending:
    """How this listener's part of the call ends: what `_end` writes and returns."""

    outcome: Outcome
    reason: EndReason
    fields: dict[str, Any]
    handover: CallMessage | None = None  # the next listener's message (outcome handed_over)


class Listener:
    def __init__(
        self,
        msg: CallMessage,
        archive: Archive,
        upstream: Upstream,
        websocket_endpoint: str,
        config: ListenerConfig,
        *,
        hooks: CallHooks | None = None,
        tools: ToolBox | None = None,
        calls: CallTools | None = None,
        guardrail: Guardrail | None = None,
        handover: Callable[[CallMessage], None] | None = None,
        redelivered: bool = False,
        clock: Callable[[], float] = time.time,
    ):
        self.msg, self.archive, self.upstream, self.config = msg, archive, upstream, config
        self.url = sideband_url(websocket_endpoint, msg.call_id)
        self.hooks, self.tools, self.guardrail, self.calls = hooks, tools, guardrail, calls
        self.handover, self.clock = handover, clock
        self.redelivered = redelivered  # an earlier try of this message failed mid-call
        self.run_started = 0.0
        self.attach_delay: float | None = None  # seconds from call created to the first sideband open
        self.sb: Sideband | None = None  # the reader's socket (control threads send on it)
        self.writer: ArchiveWriter | None = None
        self.control: Control | None = None  # tools, guardrail and policy acting on the call (control.py)
        # The hang-up, from the reader, a control thread or the limits' thread: set once, under the lock.
        self._hangup_lock = threading.Lock()
        self.hung_up_at: float | None = None
        self.end_reason: EndReason | None = None
        self._replay_last: str | None = None  # the last replayed item the service has yet to add

    # ---- the run ---------------------------------------------------------------------------------
    def run(self) -> ListenerResult:
        self.run_started = self.clock()
        box_end = self.run_started + self.config.time_box
        failed: CallGone | SidebandError | None = None  # the first open's failure
        try:  # socket first: every millisecond before it is a missed event
            self.sb = self._open()
        except (CallGone, SidebandError) as exc:
            failed = exc
        writer = self.writer = self._writer()
        if not isinstance(failed, CallGone):
            self.control = self._control(writer)
        try:
            return self._end(writer, self._attend(writer, box_end, failed))
        except ArchiveError:
            if self.sb is not None:
                self.sb.close()
            raise
        except BaseException as exc:
            # the queue retries the message; a successful retry overwrites this ending
            if self.sb is not None:
                self.sb.close()
            log.error("call %s: listener failed: %s", self.msg.call_id, type(exc).__name__)
            self._close_control(0)
            writer.close(
                {
                    "last_error_at": utc_iso(self.clock()),
                    "end_reason": "error",
                    "end_detail": f"listener failed: {type(exc).__name__}",
                },
                timeout=15,
            )
            raise

    def _attend(self, writer: ArchiveWriter, box_end: float, failed: CallGone | SidebandError | None) -> Ending:
        """Attach (retrying if the first open failed), then read until the call or the time box ends."""
        if isinstance(failed, CallGone):
            return self._gone(writer)
        sb = self.sb
        if sb is None:
            log.warning("call %s: sideband not open yet (%s)", self.msg.call_id, failed)
            # strict: within the attach limit of the call's start (or of this listener's, after a hand-over)
            since = self.msg.started_at if self.msg.continuation == 0 else self.run_started
            limit = since + self.config.attach_limit if self.config.strict else box_end
            try:
                sb = self.sb = self._reopen(min(limit, box_end, self.msg.deadline), str(failed))[0]
            except CallGone:
                return self._ended("ended", detail="the call ended before the listener attached")
            if sb is None:
                return self._not_attached()
        self._attached(writer, sb, first=True)
        return self._read(writer, sb, box_end)

    def _writer(self) -> ArchiveWriter:
        return ArchiveWriter(
            self.archive,
            self.msg.call_id,
            day_of(self.msg.started_at),
            self.msg.session_fields(strict=self.config.strict),
            listener=self.msg.continuation,
            flush_interval=self.config.flush_interval,
            on_commit=self.hooks.committed if self.hooks is not None else None,
        ).start()

    def _control(self, writer: ArchiveWriter) -> Control | None:
        if self.tools is None and self.calls is None and self.guardrail is None and self.config.policy is None:
            return None

        def send(message: Mapping[str, Any]) -> None:
            if self.sb is None:
                raise SidebandError("no sideband")
            self.sb.send_json(message)

        return Control(
            self.tools,
            self.guardrail,
            send,
            lambda kind, payload: writer.mark(kind, payload, self.clock()),
            self.hang_up,
            self.config.policy,
            self.config.policy_max_violations,
            calls=self.calls,
            ended=self.ended_by,
            minted=self.config.minted,
        )

    def _close_control(self, timeout: float | None = None) -> None:
        """Before the archive closes: tools in flight finish (within their time limit) and are archived."""
        if self.control is not None:
            if timeout is None:
                timeout = max(self.tools.timeout + 1 if self.tools else 0, self.calls.max_seconds if self.calls else 0)
            self.control.close(timeout)

    def _send_policy(self, sb: Sideband) -> None:
        """The policy's session.update, on every (re)attach: a new socket may follow a session reset."""
        if self.config.session_update:
            # the GA schema requires session.type (openai's SessionUpdateEvent)
            sb.send_json({"type": "session.update", "session": {"type": "realtime", **self.config.session_update}})

    def _open(self) -> Sideband:
        try:
            headers = self.upstream.headers()
        except Exception as exc:  # identity endpoint down: retried like a failed handshake
            raise SidebandError(f"no credential for the sideband: {type(exc).__name__}") from None
        return Sideband.open(self.url, headers)

    def _reopen(
        self, deadline: float, why: str, stop: Callable[[], bool] = lambda: False
    ) -> tuple[Sideband | None, int, str]:
        """Open again with bounded backoff until `deadline` or `stop()`: the socket (None if none
        opened), the waits taken and the last error. Raises CallGone: the service no longer knows the call."""
        backoff = Backoff(BACKOFF_FIRST, BACKOFF_MAX, deadline, clock=self.clock)
        while not stop() and backoff.wait():
            try:
                return self._open(), backoff.attempts, why
            except SidebandError as exc:
                why = str(exc)
                log.warning("call %s: sideband not open yet (%s)", self.msg.call_id, why)
        return None, backoff.attempts, why

    def _attached(self, writer: ArchiveWriter, sb: Sideband, first: bool) -> None:
        now = self.clock()
        fields: dict[str, Any] = {"state": "attached", "attached_at": utc_iso(now)}
        if first and self.msg.continuation == 0:
            self.attach_delay = now - self.msg.started_at
            fields["attach_delay_ms"] = round(self.attach_delay * 1000)
        else:
            self.attach_delay = None
        if first and (self.msg.continuation > 0 or self.redelivered):
            if self.msg.continuation > 0:
                fields["continuations"] = self.msg.continuation
            # events between the previous listener's socket and this one were not observed
            writer.mark(
                "listener.gap",
                {
                    "reason": "redelivered" if self.redelivered else "handover",
                    "continuation": self.msg.continuation,
                    "until": utc_iso(now),
                },
                now,
            )
        writer.session_update(fields, urgent=True)
        telemetry.event("attached", first=first, attach_delay_ms=fields.get("attach_delay_ms"))
        if self.attach_delay is not None:
            telemetry.observe(telemetry.ATTACH_DELAY, self.attach_delay * 1000)
        self._send_policy(sb)
        if first and self.msg.continues and self.msg.continuation == 0:
            self._replay(writer, sb)
        if first and self.hooks is not None:
            self.hooks.attached(self.hang_up)
        log.info("call %s: sideband attached (listener %d)", self.msg.call_id, self.msg.continuation)

    def _replay(self, writer: ArchiveWriter, sb: Sideband) -> None:
        """The conversation so far into this successor call (replay.py); the session row says when
        the service has added it all (`history_ready_at`), which the page waits for to switch."""
        assert self.msg.continues is not None
        history = replay.history(self.archive, self.msg.continues)
        messages = replay.items(history)
        done = replay.already_added(self.archive, self.msg.call_id) if self.redelivered else set()
        todo = [m for m in messages if m["item"]["id"] not in done]
        for message in todo:
            sb.send_json(message)
        self._replay_last = todo[-1]["item"]["id"] if todo else None
        writer.mark(
            "listener.replay", {"from": self.msg.continues, "items": len(messages), "sent": len(todo)}, self.clock()
        )
        if self._replay_last is None:
            self._history_ready(writer)
        log.info(
            "call %s: replaying %d of %d history items from %s",
            self.msg.call_id,
            len(todo),
            len(messages),
            self.msg.continues,
        )

    def _history_ready(self, writer: ArchiveWriter) -> None:
        self._replay_last = None
        writer.session_update({"history_ready_at": utc_iso(self.clock())}, urgent=True)
        telemetry.event("history_ready")

    # ---- reading -----------------------------------------------------------------------------------
    def _read(self, writer: ArchiveWriter, sb: Sideband, box_end: float) -> Ending:
        msg = self.msg
        while True:
            if writer.error is not None:
                sb.close()
                writer.close({}, timeout=5)  # raises ArchiveError: the queue retries the message
            now = self.clock()
            if now >= msg.deadline and self.hung_up_at is None:
                self.hang_up("limit", "maximum call duration reached")
            if self.hung_up_at is not None and now >= self.hung_up_at + HANGUP_GRACE:
                sb.close()
                return self._ended(self.end_reason or "limit")
            if now >= box_end:
                self._close_control()  # tools in flight answer over this socket before it closes
                sb.close()
                return self._handing_over()
            try:
                raw = sb.recv(min(RECV_SLICE, max(0.01, box_end - now)))
            except SidebandClosed as closed:
                if self.calls is not None and self.end_reason is None and ended_reason(closed) is not None:
                    self._close_control()  # a transfer in flight (its refer's answer may trail the close) names the end
                reason = self.end_reason or ended_reason(closed)
                if reason == "limit" and self.end_reason is None and self._page_hung_up():
                    reason = "hangup"
                if reason == "ended" and self.end_reason is None and self.msg.channel == "sip":
                    reason = "caller_hangup"  # a phone call the gateway did not end: the caller hung up
                if reason:
                    return self._ended(reason, close_code=closed.code, detail=closed.reason or None)
                new = self._reconnect(writer, box_end, f"closed {closed.code}")
            except SidebandLost as lost:
                if self.end_reason:
                    return self._ended(self.end_reason)
                new = self._reconnect(writer, box_end, str(lost))
            else:
                if raw is not None:
                    ev = parse(raw)  # the one parse of this frame: the archive and the control share it
                    writer.event(ev, self.clock())
                    if self._replay_last and (ev.fields.get("item") or {}).get("id") == self._replay_last:
                        self._history_ready(writer)  # the service added the last replayed item
                    if self.control is not None:
                        self.control.on_event(ev)
                continue
            if isinstance(new, Ending):
                return new
            sb = self.sb = new

    def _reconnect(self, writer: ArchiveWriter, box_end: float, why: str) -> Sideband | Ending:
        """Reopen with bounded backoff inside the time box; the gap is archived as a mark."""
        lost_at = self.clock()
        log.warning("call %s: sideband dropped (%s), reconnecting", self.msg.call_id, why)

        def past_deadline() -> bool:
            return self.clock() >= self.msg.deadline and self.hung_up_at is None

        try:
            sb, attempts, why = self._reopen(box_end, why, past_deadline)
        except CallGone:
            return self._ended(self.end_reason or "ended", detail="call ended while the sideband was down")
        if sb is None and past_deadline():
            self.hang_up("limit", "maximum call duration reached")
            return self._ended("limit")
        now = self.clock()
        gap = {"reason": "socket dropped", "error": why[:200], "from": utc_iso(lost_at), "until": None}
        if sb is None:
            writer.mark("listener.gap", {**gap, "attempts": attempts}, now)
            return self._handing_over()
        writer.mark(
            "listener.gap",
            {**gap, "until": utc_iso(now), "seconds": round(now - lost_at, 3), "attempts": attempts},
            now,
        )
        writer.session_update({"reconnects": attempts})
        telemetry.event("reconnected", attempts=attempts, seconds=round(now - lost_at, 3))
        telemetry.count(telemetry.RECONNECTS)
        self._send_policy(sb)
        return sb

    def _page_hung_up(self) -> bool:
        """The service closes with 1001 both at its session limit and after a hang-up; the gateway's
        hang-up route marks the session row first, so the archive knows which it was."""
        try:
            return bool((self.archive.find_session(self.msg.call_id) or {}).get(PAGE_HANGUP_FIELD))
        except Exception:  # storage down: the close code's reading stands
            return False

    def ended_by(self, reason: EndReason, why: str) -> None:
        """From a control thread: the call is leaving without a hang-up of ours (a transfer the service
        accepted). The listener reads on until the service closes the session; the close means `reason`."""
        with self._hangup_lock:
            if self.end_reason is not None:
                return
            self.end_reason = reason
        log.info("call %s: %s", self.msg.call_id, why)
        if self.writer is not None:
            self.writer.session_update({"end_detail": why})

    def hang_up(self, reason: EndReason, why: str) -> None:
        """End the call through the service, from any thread (the reader, a control step, the limits'
        budget check): once, whoever asks first; its reason is the call's."""
        writer = self.writer
        if writer is None:
            return
        with self._hangup_lock:
            if self.hung_up_at is not None:
                return
            self.hung_up_at = self.clock()
            self.end_reason = reason
        log.info("call %s: hanging up (%s)", self.msg.call_id, why)
        telemetry.event("hangup", reason=reason)
        writer.session_update({"hangup_requested_at": utc_iso(self.hung_up_at), "end_detail": why})
        try:
            self.upstream.hangup(self.msg.call_id)
        except Exception as exc:  # 404: already gone; anything else: the call ends at the service's limit
            status = getattr(exc, "status", None)
            if status != 404:
                log.error("call %s: hang-up failed: %s", self.msg.call_id, type(exc).__name__)
                writer.session_update({"hangup_error": f"{type(exc).__name__} {status or ''}".strip()})

    # ---- endings: every path returns an Ending; `_end` alone closes the record ---------------------
    def _ended(self, reason: EndReason, close_code: int | None = None, detail: str | None = None) -> Ending:
        fields: dict[str, Any] = {"state": "ended", "ended_at": utc_iso(self.clock()), "end_reason": reason}
        if close_code is not None:
            fields["close_code"] = close_code
        if detail:
            fields["end_detail"] = detail
        return Ending("ended", reason, fields)

    def _handing_over(self) -> Ending:
        nxt = self.msg.continued()
        fields = {"handed_over_at": utc_iso(self.clock()), "end_reason": "time_box", "continuations": nxt.continuation}
        return Ending("handed_over", "time_box", fields, nxt)

    def _not_attached(self) -> Ending:
        if not self.config.strict and self.clock() < self.msg.deadline:
            return self._handing_over()
        why = (
            f"not recorded: no sideband within {self.config.attach_limit:.0f} s"
            if self.config.strict
            else "maximum call duration reached before the sideband opened"
        )
        self.hang_up("hangup" if self.config.strict else "limit", why)
        return self._ended(self.end_reason or "hangup", detail=why)

    def _gone(self, writer: ArchiveWriter) -> Ending:
        """The call had ended before we could attach: complete quietly, with the session marked."""
        writer.ready.wait(30)
        log.info("call %s: already ended, nothing to record", self.msg.call_id)
        if writer.session.get("state") == "ended":  # another listener ended it: its reason stands
            reason: Any = writer.session.get("end_reason", "ended")
            return Ending("ended", reason, {"state": "ended", "end_reason": reason})
        detail = (
            "the call ended during the hand-over"
            if self.msg.continuation
            else "the call had ended before the listener attached"
        )
        return self._ended("ended", detail=detail)

    def _end(self, writer: ArchiveWriter, ending: Ending) -> ListenerResult:
        """Tools in flight finish, the archive is flushed with the ending's fields, then the next
        listener is sent for (after the flush: a failed flush sends no hand-over)."""
        self._close_control()
        nxt = ending.handover
        if nxt is not None:
            writer.mark("listener.handover", {"continuation": nxt.continuation}, self.clock())
        writer.close(ending.fields)
        if nxt is not None:
            if self.handover is not None:
                self.handover(nxt)
            log.info("call %s: time box over, handed over to listener %d", self.msg.call_id, nxt.continuation)
        done = writer.call_log
        return ListenerResult(
            self.msg.call_id,
            ending.outcome,
            ending.reason,
            events=done.summary.total,
            duplicates=done.duplicates,
            gaps=done.gaps,
            attach_delay=self.attach_delay,
            continuation=nxt,
            head=done.committed_head if done.committed_seq >= 0 else None,
            usage=dict(done.summary.usage),
            usage_before=writer.usage_before,
        )
