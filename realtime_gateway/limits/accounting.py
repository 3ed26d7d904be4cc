"""What the listener tells the limits: the call is live (hold its slot), the call ended (free it),
and what this listener saw it cost (the session row's `cost_usd`, the day's usage rows)."""

from __future__ import annotations

import logging

from ..archive.codec import day_of
from ..listener.call_listener import ListenerResult
from ..listener.message import CallMessage
from ..process import Process
from . import usage as u
from .client import principal_key

log = logging.getLogger(__name__)


def hold_slot(process: Process, msg: CallMessage) -> None:
    process.limits.renew(msg.slot, max(0.0, msg.deadline - process.clock()), principal_key(msg.principal))


def account_for(process: Process, msg: CallMessage, result: ListenerResult, run_started: float) -> None:
    ended = result.outcome == "ended"
    if ended:
        process.limits.release(msg.slot)
    # this listener's share of the call's time: from the answer (first listener) or its own start
    since = msg.started_at if msg.continuation == 0 else run_started
    seconds = max(0.0, process.clock() - since)
    delta = u.minus(result.usage, result.usage_before)
    process.limits.charge(delta, seconds, int(ended), principal_key(msg.principal))
    if result.usage:
        cost = u.cost_usd(result.usage, process.settings.limits.prices)
        try:
            process.archive.update_session(msg.call_id, day_of(msg.started_at), {"cost_usd": cost})
        except Exception as exc:  # the usage_* fields are there; the audit can price them again
            log.error("call %s: cost not written to the session row (%s)", msg.call_id, type(exc).__name__)
