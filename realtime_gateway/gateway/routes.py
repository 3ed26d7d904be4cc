"""The gateway's routes. Each returns a Response and raises ApiError for anything the caller did
wrong or the service could not do; `http.handle()` turns those into the JSON error body."""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable, Protocol

from .. import telemetry
from ..archive.status import call_status
from ..archive.store import Archive
from ..core.clock import utc_iso
from ..core.ids import valid_call_id
from ..core.message import CallMessage
from ..errors import ApiError
from ..limits.limiter import Limiter
from ..settings import Settings
from ..upstream.realtime_api import RealtimeApi
from ..upstream.secret_pool import SecretPool
from .handoff import open_call_row, queue_listener
from .health import Health
from .http import Request, Response, json_response
from .offer import check_size, offer_from_body
from .principal import HEADER as PRINCIPAL_HEADER
from .principal import principal_from_headers

log = logging.getLogger("realtime_gateway.http")


class Process(Protocol):
    """What the routes take from the process's shared objects (the composition root hands them in)."""

    settings: Settings
    limits: Limiter
    secret_pool: SecretPool
    api: RealtimeApi
    health: Health
    clock: Callable[[], float]

    @property
    def archive(self) -> Archive: ...


CONNECT_BUDGET_CAP = 200.0  # seconds; Azure cuts HTTP responses at 230 s
CAPABILITY_HEADER = "x-call-capability"
_ignored_principal = False  # logged once: a client-sent principal without App Service authentication


def _deadline(p: Process) -> float:
    # Room for the mint (with retries) and the SDP post, each bounded by http_timeout.
    return time.monotonic() + min(CONNECT_BUDGET_CAP, 2 * p.settings.http_timeout + 5)


def capability_hash(capability: str) -> str:
    return hashlib.sha256(capability.encode("utf-8")).hexdigest()


def _principal(p: Process, req: Request) -> dict[str, Any] | None:
    """The caller's principal, only where the platform authenticated the request: without App
    Service authentication anybody can send x-ms-client-principal, so it is ignored."""
    global _ignored_principal
    principal = principal_from_headers(req.headers) if p.settings.platform_auth else None
    if not p.settings.platform_auth and req.headers.get(PRINCIPAL_HEADER) and not _ignored_principal:
        _ignored_principal = True
        log.warning("ignoring %s: App Service authentication is off, so a client may have set it", PRINCIPAL_HEADER)
    if principal is None and p.settings.require_principal:
        raise ApiError(401, "principal_required", "sign in first: this gateway requires an authenticated principal")
    return principal


def _call_id(call_id: str) -> str:
    if not valid_call_id(call_id):
        raise ApiError(400, "invalid_call_id", "the call id is malformed")
    return call_id


@dataclass(frozen=True)
class Prior:
    """The call a `?continue=` request continues: its conversation goes on in the new call."""

    call_id: str
    day: str
    conversation_id: str
    started_at: float  # the conversation's first call
    slot: str | None


def _session_with_capability(p: Process, req: Request, rid: str, call_id: str) -> tuple[str, dict[str, Any] | None]:
    """The x-call-capability the request carries (401 without one) and the call's session row."""
    given = req.headers.get(CAPABILITY_HEADER) or ""
    if not given:
        raise ApiError(401, "capability_required", f"send the {CAPABILITY_HEADER} that the connect answer gave")
    try:
        return given, p.archive.find_session(call_id)
    except Exception as exc:
        log.error("rid=%s call=%s: archive unreadable (%s)", rid, call_id, type(exc).__name__)
        raise ApiError(503, "archive_unavailable", "the call archive cannot be read now") from None


def _prior(p: Process, req: Request, rid: str, principal: dict[str, Any] | None) -> Prior | None:
    """`POST /api/connect?continue=<call_id>` with that call's x-call-capability: its successor."""
    call_id = req.params.get("continue")
    if not call_id:
        return None
    _call_id(call_id)
    p.limits.admit_control(req.headers, principal, rid)  # a flood of guessed capabilities reads nothing past it
    given, row = _session_with_capability(p, req, rid, call_id)
    if row is None:
        raise ApiError(404, "conversation_not_found", f"there is no call {call_id} to continue")
    if not hmac.compare_digest(str(row.get("capability_sha256") or ""), capability_hash(given)):
        raise ApiError(403, "capability_invalid", f"this {CAPABILITY_HEADER} does not hold call {call_id}")
    if row.get("state") == "ended":
        raise ApiError(409, "conversation_ended", f"call {call_id} has ended: start a new conversation")
    started = datetime.fromisoformat(str(row.get("conversation_started_at") or row["created_at"])).timestamp()
    limit = p.settings.max_conversation_seconds
    if p.clock() - started >= limit:
        raise ApiError(409, "conversation_too_long", f"the conversation has reached its limit of {limit} s")
    if not p.archive.claim_continuation(call_id, f"pending:{rid}"):  # one successor, however many ask
        raise ApiError(409, "already_continued", f"call {call_id} is already continued by another call")
    return Prior(
        call_id, str(row["PartitionKey"]), str(row.get("conversation_id") or call_id), started, row.get("slot")
    )


@telemetry.traced("connect")
def connect(p: Process, req: Request, rid: str, enqueue: Callable[[str], None] | None = None) -> Response:
    check_size(req.body)  # before the limiter writes anything
    principal = _principal(p, req)
    telemetry.annotate(principal_id=(principal or {}).get("id"))
    prior = _prior(p, req, rid, principal)
    try:
        with telemetry.span("limiter"):
            # before any mint: a refusal costs nothing upstream; a successor keeps the conversation's slot
            slot = p.limits.admit(req.headers, principal, rid, call=prior is None)
        try:
            offer = offer_from_body(req.headers.get("content-type"), req.body)
            deadline = _deadline(p)
            answer = p.secret_pool.start_call(offer, deadline, rid)  # a pooled secret, else minted inline
        except BaseException:
            slot.release()
            raise
    except BaseException:
        if prior is not None:  # the call may be continued again
            p.archive.update_session(prior.call_id, prior.day, {"continued_by": ""})
        raise
    telemetry.annotate(call_id=answer.call_id)
    started = p.clock()
    capability = secrets.token_urlsafe(32)  # the creator's proof for hang-up; only its hash is kept
    ends = started + p.settings.max_call_seconds
    if prior is not None:
        ends = min(ends, prior.started_at + p.settings.max_conversation_seconds)
    message = CallMessage(
        call_id=answer.call_id,
        started_at=started,
        deadline=ends,
        origin=req.origin,
        principal=principal,
        request_id=rid,
        model=p.settings.deployment,
        voice=(p.settings.session_policy.get("audio") or {}).get("output", {}).get("voice"),
        traceparent=telemetry.traceparent(),  # the listener's span joins this call's trace
        slot=prior.slot if prior is not None else slot.id,
        capability_sha256=capability_hash(capability),
        conversation_id=prior.conversation_id if prior is not None else None,
        continues=prior.call_id if prior is not None else None,
        conversation_started_at=prior.started_at if prior is not None else None,
    )
    open_call_row(p, message, rid)
    if prior is not None:
        try:  # the page hangs the old call up once the new one's history is in place
            p.archive.update_session(prior.call_id, prior.day, {"continued_by": answer.call_id})
        except Exception as exc:
            log.error("connect rid=%s: continued_by not written on %s (%s)", rid, prior.call_id, type(exc).__name__)
    listener = queue_listener(message, enqueue, rid)
    log.info("connect rid=%s call=%s listener=%s", rid, answer.call_id, listener)
    return Response(
        201,
        answer.sdp.encode("utf-8"),
        {
            "x-call-id": answer.call_id,
            # where the SDKs look for the call id (the last path segment), as the service answers
            "Location": f"/api/calls/{answer.call_id}",
            CAPABILITY_HEADER: capability,
            # when this call ends at the latest: the service's session cap or MAX_CALL_SECONDS
            "x-call-expires-at": str(int(min(ends, started + p.settings.service_session_seconds))),
            "x-conversation-id": message.conversation_id or answer.call_id,
            "x-listener": listener,
            "Cache-Control": "no-store",
        },
        "application/sdp",
    )


def token(p: Process, req: Request, rid: str) -> Response:
    if not p.settings.token_route_enabled:
        raise ApiError(
            404,
            "token_route_disabled",
            "GET /api/token is switched off (TOKEN_ROUTE_ENABLED=false); use POST /api/connect",
        )
    p.limits.admit(req.headers, _principal(p, req), rid, call=False)
    secret = p.api.mint_client_secret(_deadline(p), rid)
    log.info("token rid=%s minted a client secret expiring at %d", rid, secret.expires_at)
    # Only what a client needs for its own SDP exchange: never the session policy.
    return json_response(
        200,
        {
            "token": secret.value,
            "expires_at": secret.expires_at,
            "endpoint": p.settings.endpoint,
            "deployment": p.settings.deployment,
        },
        {"Cache-Control": "no-store"},
    )


def hangup(p: Process, req: Request, rid: str, call_id: str) -> Response:
    principal = _principal(p, req)
    _call_id(call_id)
    p.limits.admit_control(req.headers, principal, rid)
    given, row = _session_with_capability(p, req, rid, call_id)
    held = str((row or {}).get("capability_sha256") or "")
    # one answer for an unknown call and a wrong capability: the route does not reveal which calls exist
    if not held or not hmac.compare_digest(held, capability_hash(given)):
        raise ApiError(403, "capability_invalid", f"this {CAPABILITY_HEADER} does not hold call {call_id}")
    if (row or {}).get("state") == "ended":
        return json_response(200, {"call_id": call_id, "status": "ended"})
    try:  # first, so the listener finds it when the service closes the sideband
        p.archive.mark_page_hangup(call_id, utc_iso(time.time()))
    except Exception as exc:  # the hang-up matters more than its note in the archive
        log.error("hangup rid=%s call=%s: not marked in the archive (%s)", rid, call_id, type(exc).__name__)
    p.api.hangup(call_id, time.monotonic() + p.settings.http_timeout)
    log.info("hangup rid=%s call=%s", rid, call_id)
    return json_response(200, {"call_id": call_id, "status": "ended"})


def call_state(p: Process, req: Request, rid: str, call_id: str) -> Response:
    _call_id(call_id)
    p.limits.admit_control(req.headers, _principal(p, req), rid)
    try:
        state = call_status(p.archive, call_id)
    except Exception as exc:  # storage down: say so, without details
        log.error("call state rid=%s call=%s: archive unreadable (%s)", rid, call_id, type(exc).__name__)
        raise ApiError(503, "archive_unavailable", "the call archive cannot be read now") from None
    return json_response(200, state, {"Cache-Control": "no-store"})


def health(p: Process, req: Request, rid: str) -> Response:
    # answered from a copy for HEALTH_CACHE_SECONDS: an anonymous route that asks storage and the
    # identity endpoint on every request would be a free amplifier
    checks, checked_at = p.health.checks()
    healthy = all(v == "ok" or v.startswith("not used") for v in checks.values())
    body: dict[str, Any] = {"status": "ok" if healthy else "unhealthy", "checks": checks, "checked_at": checked_at}
    body["refusals"] = dict(p.limits.refusals)  # this instance's limit refusals by code, since it started
    return json_response(200 if healthy else 503, body)
