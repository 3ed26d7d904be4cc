"""The decision on a verified incoming call: screen its numbers, admit it through the same limiter as
browser calls (keyed by the caller's salted hash), then accept it with the server's policy and hand it
to the listener, or reject it (486 busy: cap, rate or budget; 603 declined) and archive the refusal."""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from typing import Any, Callable, Mapping, Protocol

from .. import telemetry
from ..archive.store import Archive
from ..core.clock import day_of, utc_iso
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


def decide(
    p: PhoneServices, call: Incoming, rid: str, deadline: float, enqueue: Callable[[str], None] | None
) -> dict[str, Any]:
    """Accept or reject the call; the answer's body for the webhook (never the caller's number)."""
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
    _open_row(p, message, {}, rid)
    listener = "queued"
    try:
        if enqueue is None:
            raise RuntimeError("no queue output binding")
        with telemetry.span("enqueue", kind="producer"):
            enqueue(message.to_json())
    except Exception as exc:  # the call goes on without its recording; say so
        listener = "not-queued"
        log.error("sip rid=%s call=%s: listener message not queued (%s)", rid, call.call_id, type(exc).__name__)
    log.info("sip rid=%s call=%s accepted listener=%s", rid, call.call_id, listener)
    return {"status": "accepted", "call_id": call.call_id, "listener": listener}


def _refuse(p: PhoneServices, msg: CallMessage, status: int, reason: str, deadline: float, rid: str) -> dict[str, Any]:
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
    _open_row(p, msg, ended, rid)
    log.info("sip rid=%s call=%s refused %d (%s)", rid, msg.call_id, status, reason)
    return {"status": "rejected", "call_id": msg.call_id, "sip_status": status, "reason": reason, "sent": rejected}


def _open_row(p: PhoneServices, msg: CallMessage, extra: Mapping[str, Any], rid: str) -> None:
    try:
        p.archive.ensure_tables()
        p.archive.open_session(
            msg.call_id, day_of(msg.started_at), {**msg.session_fields(p.settings.strict_recording), **extra}
        )
    except Exception as exc:  # the call's outcome matters more than its row
        log.error("sip rid=%s call=%s: session row not written (%s)", rid, msg.call_id, type(exc).__name__)


def budget(settings: Settings) -> float:
    """When the webhook's answer must be on its way: Azure asks for a 200 within 10 s."""
    return time.monotonic() + min(8.0, settings.http_timeout)
