"""The decision on a verified incoming call: screen its numbers, admit it through the same limiter as
browser calls (keyed by the caller's salted hash), then accept it with the server's policy, or reject
it (486 busy: cap, rate or budget; 603 declined). The route archives either and queues the listener
of an accepted one (gateway/handoff.py), as for a browser's call."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Mapping, Protocol

from .. import telemetry
from ..archive.store import Archive
from ..core.clock import utc_iso
from ..core.message import CallMessage
from ..errors import ApiError
from ..limits.limiter import Limiter
from ..settings import Settings
from .caller import caller_key, number_of, screen, stored_caller
from .webhook import Incoming

log = logging.getLogger("realtime_gateway.phone")

BUSY, DECLINED = 486, 603  # SIP: Busy Here (a limit, try later); Decline (this call is not taken)


class CallControl(Protocol):
    def accept(self, call_id: str, session: Mapping[str, Any], deadline: float | None = None) -> None: ...
    def reject(self, call_id: str, status_code: int, deadline: float | None = None) -> None: ...


class PhoneServices(Protocol):
    """What the phone decision takes from the process's shared objects."""

    settings: Settings
    limits: Limiter
    clock: Callable[[], float]

    @property
    def api(self) -> CallControl: ...

    @property
    def archive(self) -> Archive: ...


def phone_policy(settings: Settings) -> Mapping[str, Any]:
    """The session a phone call is accepted with: SIP_SESSION_POLICY_FILE, else the browser calls' one."""
    return settings.sip.session_policy or settings.session_policy


@dataclass(frozen=True)
class Decision:
    message: CallMessage  # the call's message: its session row, and the listener's when accepted
    accepted: bool
    body: dict[str, Any]  # the webhook's answer (never the caller's number)
    row: dict[str, Any] = field(default_factory=dict)  # fields the session row adds (a refusal's)


def decide(p: PhoneServices, call: Incoming, rid: str, deadline: float) -> Decision:
    """Accept or reject the call through the service."""
    s = p.settings
    number, called = number_of(call.header("From")), number_of(call.header("To"))
    key = caller_key(number, s.sip.caller_salt)
    now = p.clock()
    base = CallMessage(
        call_id=call.call_id,
        started_at=now,
        deadline=now + s.max_call_seconds,
        principal={"id": key, "provider": "sip"},  # the limits' key: per-caller rate and budgets
        request_id=rid,
        model=s.deployment,
        voice=((phone_policy(s).get("audio") or {}).get("output") or {}).get("voice"),
        channel="sip",
        caller=stored_caller(number, s.sip.caller_privacy, s.sip.caller_salt),
        called=called,
        sip_call_id=call.header("Call-ID"),
    )
    telemetry.annotate(call_id=call.call_id, channel="sip")
    declined = screen(number, called, s.sip.allowed_numbers, s.sip.blocked_numbers)
    if declined:
        return _refuse(p, base, DECLINED, declined, deadline, rid)
    try:
        with telemetry.span("limiter"):
            slot = p.limits.admit({}, base.principal, rid, call=True)
    except ApiError as exc:  # a limit (429) or limits that cannot be checked (503): busy, try later
        return _refuse(p, base, BUSY, exc.code, deadline, rid)
    try:
        p.api.accept(call.call_id, phone_policy(s), deadline)
    except BaseException:
        slot.release()
        raise
    message = replace(base, slot=slot.id, traceparent=telemetry.traceparent())
    telemetry.count(telemetry.CALLS_STARTED, channel="sip")
    return Decision(message, True, {"status": "accepted", "call_id": call.call_id})


def _refuse(p: PhoneServices, msg: CallMessage, status: int, reason: str, deadline: float, rid: str) -> Decision:
    rejected = True
    try:
        p.api.reject(msg.call_id, status, deadline)
    except ApiError as exc:  # the call may be gone already; the refusal is archived all the same
        rejected = False
        log.warning("sip rid=%s call=%s: reject %d failed (%s)", rid, msg.call_id, status, exc.code)
    ended = {
        "state": "ended",
        "ended_at": utc_iso(p.clock()),
        "end_reason": "refused",
        "refusal": reason,
        "sip_status": status,
    }
    log.info("sip rid=%s call=%s refused %d (%s)", rid, msg.call_id, status, reason)
    telemetry.count(telemetry.CALLS_REFUSED, reason=reason, channel="sip")
    body = {"status": "rejected", "call_id": msg.call_id, "sip_status": status, "reason": reason, "sent": rejected}
    return Decision(msg, False, body, ended)


def budget(settings: Settings) -> float:
    """When the webhook's answer must be on its way: Azure asks for a 200 within 10 s."""
    return time.monotonic() + min(8.0, settings.http_timeout)
