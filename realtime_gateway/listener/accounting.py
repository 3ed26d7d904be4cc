"""What the listener tells the limits: the call is live (hold its slot), its usage grew (charge the
day as it goes, so the day's budget sees running calls), the call ended (free the slot, charge the
rest); and, with BUDGET_HANGUP_RUNNING, when a spent budget hangs the call up."""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Callable

from .. import telemetry
from ..core import usage as u
from ..core.clock import day_of
from ..core.message import CallMessage
from ..core.result import EndReason, ListenerResult
from ..limits.client_key import principal_key
from ..limits.limiter import Limiter

if TYPE_CHECKING:
    from ..archive.store import Archive

log = logging.getLogger(__name__)

BUDGET_CHECK_SECONDS = 30.0  # a quiet call still spends minutes, and other calls spend the day's tokens


class CallCharges:
    """The listener's hooks (`attached`, `committed`) for one call's limits."""

    def __init__(self, limits: Limiter, archive: Archive, clock: Callable[[], float], msg: CallMessage) -> None:
        self.limits, self.archive, self.clock, self.msg = limits, archive, clock, msg
        self.pkey = principal_key(msg.principal)
        self.charged: u.Usage | None = None  # the call's usage already on the day's rows
        self.hang_up: Callable[[EndReason, str], None] | None = None  # the listener's, given when it attaches
        self._lock = threading.Lock()
        self._stop = threading.Event()

    @property
    def watching(self) -> bool:
        return self.limits.limits.hangup_running and self.limits.budgets_on

    def attached(self, hang_up: Callable[[EndReason, str], None]) -> None:
        """The call is live: hold its slot until its deadline; watch the budgets if asked to."""
        self.hang_up = hang_up
        # on a thread of its own: a slow limits table never delays the archive
        threading.Thread(target=self._attached, args=(telemetry.current(),), daemon=True).start()

    def _attached(self, trace: object) -> None:
        telemetry.attach(trace)  # this thread is the call's: a budget hang-up joins its trace
        self.limits.renew(self.msg.slot, max(0.0, self.msg.deadline - self.clock()), self.pkey)
        while self.watching and not self._stop.wait(BUDGET_CHECK_SECONDS):
            self._check()

    def committed(self, usage: u.Usage, usage_before: u.Usage) -> None:
        """On the archive writer's thread, after a batch that changed the call's usage is durable."""
        with self._lock:
            delta = u.minus(usage, self.charged if self.charged is not None else usage_before)
            self.charged = dict(usage)
        if delta:
            self.limits.background(self._charge, delta, telemetry.current())

    def _charge(self, delta: u.Usage, trace: object) -> None:
        with telemetry.within(trace):  # the pool's thread is shared by every call
            self.limits.charge(delta, 0, 0, self.pkey)
            if self.watching:
                self._check()

    def _check(self) -> None:
        why = self.limits.spent(self.pkey)
        if why and self.hang_up is not None:
            log.warning("call %s: %s; hanging up (BUDGET_HANGUP_RUNNING)", self.msg.call_id, why)
            self.hang_up("budget", why)

    def _continued(self) -> bool:
        """A successor continues this call's conversation and holds its slot (`continued_by`)."""
        try:
            return bool((self.archive.find_session(self.msg.call_id) or {}).get("continued_by"))
        except Exception as exc:  # storage down: release; the successor's own renew takes it back
            log.error("call %s: continuation not checked (%s)", self.msg.call_id, type(exc).__name__)
            return False

    def stop(self) -> None:
        self._stop.set()

    def finished(self, result: ListenerResult, run_started: float) -> None:
        """This listener is done: free the slot if the call ended, charge what is not charged yet."""
        limits, msg = self.limits, self.msg
        ended = result.outcome == "ended"
        handed_on = ended and self._continued()
        if ended and not handed_on:
            limits.release(msg.slot)
        # this listener's share of the call's time: from the answer (first listener) or its own start
        since = msg.started_at if msg.continuation == 0 else run_started
        seconds = max(0.0, self.clock() - since)
        with self._lock:
            delta = u.minus(result.usage, self.charged if self.charged is not None else result.usage_before)
            self.charged = dict(result.usage)
        limits.charge(delta, seconds, int(ended), self.pkey)
        if not ended or handed_on:  # the next listener's (or call's) running minutes count from here
            limits.charged_until(msg.slot, self.clock())
        if result.usage:
            cost = u.cost_usd(result.usage, limits.limits.prices)
            try:
                self.archive.update_session(msg.call_id, day_of(msg.started_at), {"cost_usd": cost})
            except Exception as exc:  # the usage_* fields are there; the audit can price them again
                log.error("call %s: cost not written to the session row (%s)", msg.call_id, type(exc).__name__)
