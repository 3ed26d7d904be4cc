"""The sideband listener for one call: attach first, archive every event, control the call, hand over.

One invocation holds one call for at most the time box. The socket opens before anything else (the
sideband never replays what was missed); the archive writer runs on its own thread so a slow write
never stalls the reader. At the call's deadline the listener hangs up through the service; when the
time box runs out on a live call it hands over with a continuation message.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Protocol

from .. import telemetry
from ..archive.store import PAGE_HANGUP_FIELD, Archive, ArchiveError
from ..archive.writer import ArchiveWriter
from ..core.clock import utc_iso
from ..core.events import parse
from ..core.message import CallMessage
from ..core.result import EndReason, ListenerResult, Outcome
from ..settings import Settings
from . import replay
from .control import Control
from .line import CallLine
from .sideband import CallGone, Dialer, Sideband, SidebandClosed, SidebandError, SidebandLost

log = logging.getLogger(__name__)

RECV_SLICE = 0.25  # how often the reader looks at the clock between frames
HANGUP_GRACE = 5.0  # after hanging up, keep reading this long for the closing events
ENDED_CODES: dict[int, EndReason] = {1000: "ended", 1001: "limit"}  # 1001: the service's session limit


def ended_reason(closed: SidebandClosed) -> EndReason | None:
    """How a close frame ended the call; None for codes that mean a broken connection."""
    if closed.code not in ENDED_CODES:
        return None
    if "hang" in closed.reason.lower():
        return "hangup"  # someone hung up through the service (the gateway's route)
    return ENDED_CODES[closed.code]


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
    """Reads one call's sideband for one time box, with the parts `assembly.assemble` wired for it."""

    def __init__(
        self,
        msg: CallMessage,
        archive: Archive,
        dial: Dialer,
        writer: ArchiveWriter,
        line: CallLine,
        config: ListenerConfig,
        *,
        control: Control | None = None,
        hooks: CallHooks | None = None,
        handover: Callable[[CallMessage], None] | None = None,
        redelivered: bool = False,
        clock: Callable[[], float] = time.time,
    ):
        self.msg, self.archive, self.config = msg, archive, config
        self.dial, self.writer, self.line, self.control = dial, writer, line, control
        self.hooks, self.handover, self.clock = hooks, handover, clock
        self.redelivered = redelivered  # an earlier try of this message failed mid-call
        self.run_started = 0.0
        self.attach_delay: float | None = None  # seconds from call created to the first sideband open
        self._replay_last: str | None = None  # the last replayed item the service has yet to add

    # ---- the run ---------------------------------------------------------------------------------
    def run(self) -> ListenerResult:
        self.run_started = self.clock()
        box_end = self.run_started + self.config.time_box
        failed: CallGone | SidebandError | None = None  # the first open's failure
        try:  # socket first: every millisecond before it is a missed event
            self.line.connect(self.dial.open())
        except (CallGone, SidebandError) as exc:
            failed = exc
        self.writer.start()
        try:
            ending = self._attend(box_end, failed)
            return self._end(ending)
        except ArchiveError:
            if self.line.sb is not None:
                self.line.sb.close()
            raise
        except BaseException as exc:
            # the queue retries the message; a successful retry overwrites this ending
            if self.line.sb is not None:
                self.line.sb.close()
            log.error("call %s: listener failed: %s", self.msg.call_id, type(exc).__name__)
            self._close_control(0)
            self.writer.close(
                {
                    "last_error_at": utc_iso(self.clock()),
                    "end_reason": "error",
                    "end_detail": f"listener failed: {type(exc).__name__}",
                },
                timeout=15,
            )
            raise

    def _attend(self, box_end: float, failed: CallGone | SidebandError | None) -> Ending:
        """Attach (retrying if the first open failed), then read until the call or the time box ends."""
        if isinstance(failed, CallGone):
            return self._gone()
        sb = self.line.sb
        if sb is None:
            log.warning("call %s: sideband not open yet (%s)", self.msg.call_id, failed)
            # strict: within the attach limit of the call's start (or of this listener's, after a hand-over)
            since = self.msg.started_at if self.msg.continuation == 0 else self.run_started
            limit = since + self.config.attach_limit if self.config.strict else box_end
            try:
                sb = self.dial.reopen(min(limit, box_end, self.msg.deadline), str(failed))[0]
            except CallGone:
                return self._ended("ended", detail="the call ended before the listener attached")
            if sb is None:
                return self._not_attached()
            self.line.connect(sb)
        self._attached(sb, first=True)
        return self._read(sb, box_end)

    def _close_control(self, timeout: float | None = None) -> None:
        """Before the archive closes: tools in flight finish (within their time limit) and are archived."""
        if self.control is not None:
            self.control.close(timeout)

    def _attached(self, sb: Sideband, first: bool) -> None:
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
            self.writer.mark(
                "listener.gap",
                {
                    "reason": "redelivered" if self.redelivered else "handover",
                    "continuation": self.msg.continuation,
                    "until": utc_iso(now),
                },
                now,
            )
        self.writer.session_update(fields, urgent=True)
        telemetry.event("attached", first=first, attach_delay_ms=fields.get("attach_delay_ms"))
        if self.attach_delay is not None:
            telemetry.observe(telemetry.ATTACH_DELAY, self.attach_delay * 1000)
        if first and self.msg.continues and self.msg.continuation == 0:
            self._replay(sb)
        if first and self.hooks is not None:
            self.hooks.attached(self.line.hang_up)
        log.info("call %s: sideband attached (listener %d)", self.msg.call_id, self.msg.continuation)

    def _replay(self, sb: Sideband) -> None:
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
        self.writer.mark(
            "listener.replay", {"from": self.msg.continues, "items": len(messages), "sent": len(todo)}, self.clock()
        )
        if self._replay_last is None:
            self._history_ready()
        log.info(
            "call %s: replaying %d of %d history items from %s",
            self.msg.call_id,
            len(todo),
            len(messages),
            self.msg.continues,
        )

    def _history_ready(self) -> None:
        self._replay_last = None
        self.writer.session_update({"history_ready_at": utc_iso(self.clock())}, urgent=True)
        telemetry.event("history_ready")

    # ---- reading -----------------------------------------------------------------------------------
    def _read(self, sb: Sideband, box_end: float) -> Ending:
        msg, writer, line = self.msg, self.writer, self.line
        while True:
            if writer.error is not None:
                sb.close()
                writer.close({}, timeout=5)  # raises ArchiveError: the queue retries the message
            now = self.clock()
            if now >= msg.deadline and line.hung_up_at is None:
                line.hang_up("limit", "maximum call duration reached")
            if line.hung_up_at is not None and now >= line.hung_up_at + HANGUP_GRACE:
                sb.close()
                return self._ended(line.end_reason or "limit")
            if now >= box_end:
                self._close_control()  # tools in flight answer over this socket before it closes
                sb.close()
                return self._handing_over()
            try:
                raw = sb.recv(min(RECV_SLICE, max(0.01, box_end - now)))
            except (SidebandClosed, SidebandLost) as dropped:
                ending = self._closed(dropped)
                if ending is not None:
                    return ending
                why = f"closed {dropped.code}" if isinstance(dropped, SidebandClosed) else str(dropped)
                new = self._reconnect(box_end, why)
            else:
                if raw is not None:
                    ev = parse(raw)  # the one parse of this frame: the archive and the control share it
                    writer.event(ev, self.clock())
                    if self._replay_last and (ev.fields.get("item") or {}).get("id") == self._replay_last:
                        self._history_ready()  # the service added the last replayed item
                    if self.control is not None:
                        self.control.on_event(ev)
                continue
            if isinstance(new, Ending):
                return new
            sb = new
            line.connect(sb)

    def _closed(self, dropped: SidebandClosed | SidebandLost) -> Ending | None:
        """How the socket's end ends the call; None when it only dropped (it is opened again)."""
        line = self.line
        if isinstance(dropped, SidebandLost):
            return self._ended(line.end_reason) if line.end_reason else None
        code_says = ended_reason(dropped)
        if self.control is not None and self.control.calls is not None and line.end_reason is None and code_says:
            self._close_control()  # a transfer in flight (its refer's answer may trail the close) names the end
        reason = line.end_reason or code_says
        if reason == "limit" and line.end_reason is None and self._page_hung_up():
            reason = "hangup"
        if reason == "ended" and line.end_reason is None and self.msg.channel == "sip":
            reason = "caller_hangup"  # a phone call the gateway did not end: the caller hung up
        if reason is None:
            return None
        return self._ended(reason, close_code=dropped.code, detail=dropped.reason or None)

    def _reconnect(self, box_end: float, why: str) -> Sideband | Ending:
        """Reopen with bounded backoff inside the time box; the gap is archived as a mark."""
        lost_at = self.clock()
        log.warning("call %s: sideband dropped (%s), reconnecting", self.msg.call_id, why)

        def past_deadline() -> bool:
            return self.clock() >= self.msg.deadline and self.line.hung_up_at is None

        try:
            sb, attempts, why = self.dial.reopen(box_end, why, past_deadline)
        except CallGone:
            return self._ended(self.line.end_reason or "ended", detail="call ended while the sideband was down")
        if sb is None and past_deadline():
            self.line.hang_up("limit", "maximum call duration reached")
            return self._ended("limit")
        now = self.clock()
        gap = {"reason": "socket dropped", "error": why[:200], "from": utc_iso(lost_at), "until": None}
        if sb is None:
            self.writer.mark("listener.gap", {**gap, "attempts": attempts}, now)
            return self._handing_over()
        self.writer.mark(
            "listener.gap",
            {**gap, "until": utc_iso(now), "seconds": round(now - lost_at, 3), "attempts": attempts},
            now,
        )
        self.writer.session_update({"reconnects": attempts})
        telemetry.event("reconnected", attempts=attempts, seconds=round(now - lost_at, 3))
        telemetry.count(telemetry.RECONNECTS)
        return sb

    def _page_hung_up(self) -> bool:
        """The service closes with 1001 both at its session limit and after a hang-up; the gateway's
        hang-up route marks the session row first, so the archive knows which it was."""
        try:
            return bool((self.archive.find_session(self.msg.call_id) or {}).get(PAGE_HANGUP_FIELD))
        except Exception:  # storage down: the close code's reading stands
            return False

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
        self.line.hang_up("hangup" if self.config.strict else "limit", why)
        return self._ended(self.line.end_reason or "hangup", detail=why)

    def _gone(self) -> Ending:
        """The call had ended before we could attach: complete quietly, with the session marked."""
        writer = self.writer
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

    def _end(self, ending: Ending) -> ListenerResult:
        """Tools in flight finish, the archive is flushed with the ending's fields, then the next
        listener is sent for (after the flush: a failed flush sends no hand-over)."""
        self._close_control()
        writer, nxt = self.writer, ending.handover
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
