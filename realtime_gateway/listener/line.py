"""One live call as the listener's threads share it: the socket to send on and the hang-up.

The reader swaps the socket on a reconnect; control steps send on it and may hang up; the limits'
budget check may hang up. What they share lives here, under one lock, so no thread reaches into
another's object.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Callable, Mapping, Protocol

from .. import telemetry
from ..archive.writer import ArchiveWriter
from ..core.clock import utc_iso
from ..core.result import EndReason
from .sideband import Sideband, SidebandError

log = logging.getLogger(__name__)


class Upstream(Protocol):
    """What the listener needs from the service besides the socket."""

    def headers(self) -> Mapping[str, str]: ...
    def hangup(self, call_id: str) -> None: ...
    def refer(self, call_id: str, target_uri: str, deadline: float | None = None) -> None: ...


class CallLine:
    def __init__(self, call_id: str, upstream: Upstream, writer: ArchiveWriter, clock: Callable[[], float]):
        self.call_id, self.upstream, self.writer, self.clock = call_id, upstream, writer, clock
        self._lock = threading.Lock()
        self.sb: Sideband | None = None  # the reader's socket: it alone sets it, through connect
        self.hung_up_at: float | None = None
        self.end_reason: EndReason | None = None  # a departure's (ended_by) or, over it, our hang-up's

    def connect(self, sb: Sideband | None) -> None:
        """The socket to send on from now on: the first, or the one reopened after a drop."""
        with self._lock:
            self.sb = sb

    def send(self, message: Mapping[str, Any]) -> None:
        with self._lock:
            sb = self.sb
        if sb is None:
            raise SidebandError("no sideband")
        sb.send_json(message)

    def mark(self, kind: str, payload: dict[str, Any]) -> None:
        self.writer.mark(kind, payload, self.clock())

    def ended_by(self, reason: EndReason, why: str) -> None:
        """From a control thread: the call is leaving without a hang-up of ours (a transfer the service
        accepted). The listener reads on until the service closes the session; the close means `reason`."""
        with self._lock:
            if self.end_reason is not None:
                return
            self.end_reason = reason
        log.info("call %s: %s", self.call_id, why)
        self.writer.session_update({"end_detail": why})

    def hang_up(self, reason: EndReason, why: str) -> None:
        """End the call through the service, from any thread (the reader, a control step, the limits'
        budget check): once, whoever asks first; its reason is the call's."""
        with self._lock:
            if self.hung_up_at is not None:
                return
            self.hung_up_at = self.clock()
            self.end_reason = reason
        log.info("call %s: hanging up (%s)", self.call_id, why)
        telemetry.event("hangup", reason=reason)
        self.writer.session_update({"hangup_requested_at": utc_iso(self.hung_up_at), "end_detail": why})
        try:
            self.upstream.hangup(self.call_id)
        except Exception as exc:  # 404: already gone; anything else: the call ends at the service's limit
            status = getattr(exc, "status", None)
            if status != 404:
                log.error("call %s: hang-up failed: %s", self.call_id, type(exc).__name__)
                self.writer.session_update({"hangup_error": f"{type(exc).__name__} {status or ''}".strip()})
