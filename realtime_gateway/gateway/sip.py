"""`POST /api/sip/incoming`: the signed `realtime.call.incoming` webhook of a phone call.

Verified over the raw bytes (SIP_WEBHOOK_SECRET, 300 s tolerance) before anything else: a bad or
stale signature gets 401 and nothing happens. Each `webhook-id` is acted on once, on any instance
(a conditional insert); a repeat gets 200. The answer leaves within Azure's 10 s budget."""

from __future__ import annotations

import logging
from typing import Callable, Protocol

from azure.core.exceptions import AzureError

from .. import telemetry
from ..errors import ApiError
from ..phone.deliveries import Deliveries
from ..phone.incoming import PhoneServices, budget, decide
from ..phone.webhook import BadWebhook, incoming, verify
from .handoff import open_call_row, queue_listener
from .http import Request, Response, json_response

log = logging.getLogger("realtime_gateway.http")


class SipProcess(PhoneServices, Protocol):
    deliveries: Deliveries


def sip_incoming(p: SipProcess, req: Request, rid: str, enqueue: Callable[[str], None] | None = None) -> Response:
    # the phone call's trace starts here, as a browser call's starts at connect: the listener is its child
    with telemetry.span("sip", kind="server", request_id=rid):
        return _incoming(p, req, rid, enqueue)


def _incoming(p: SipProcess, req: Request, rid: str, enqueue: Callable[[str], None] | None) -> Response:
    deadline = budget(p.settings)
    if not p.settings.sip.enabled:
        raise ApiError(404, "sip_disabled", "phone calls are off: SIP_WEBHOOK_SECRET is not set")
    try:
        event = verify(p.settings.sip.webhook_secret, req.headers, req.body)
        call = incoming(event, req.headers.get("webhook-id") or "")
    except BadWebhook as exc:
        log.warning("sip rid=%s: webhook refused (%s)", rid, exc)
        raise ApiError(401, "webhook_signature_invalid", "the webhook's signature is not valid") from None
    if call is None:
        return json_response(200, {"status": "ignored", "type": str(event.get("type"))})
    try:
        first = p.deliveries.claim(call.webhook_id, call.call_id)
    except AzureError as exc:  # cannot tell a repeat: let the service deliver it again
        log.error("sip rid=%s call=%s: delivery not claimed (%s)", rid, call.call_id, type(exc).__name__)
        raise ApiError(503, "storage_unavailable", "the gateway cannot record the delivery now") from None
    if not first:
        log.info("sip rid=%s call=%s: repeated delivery %s ignored", rid, call.call_id, call.webhook_id)
        return json_response(200, {"status": "duplicate", "call_id": call.call_id})
    try:
        decision = decide(p, call, rid, deadline)
    except BaseException:
        try:  # not answered nor refused: a redelivery may try again
            p.deliveries.forget(call.webhook_id)
        except AzureError:
            pass
        raise
    open_call_row(p, decision.message, rid, decision.row)
    outcome = decision.body
    if decision.accepted:
        outcome = {**outcome, "listener": queue_listener(decision.message, enqueue, rid)}
        log.info("sip rid=%s call=%s accepted listener=%s", rid, call.call_id, outcome["listener"])
    try:
        p.deliveries.record(call.webhook_id, str(outcome["status"]))
    except AzureError:
        pass
    return json_response(200, outcome)
