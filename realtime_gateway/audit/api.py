"""The read-only audit API's routes (`/api/audit/...`), off unless AUDIT_API_ENABLED=true.

They run under `gateway/http.handle` like every route; function_app.py registers them at the
`function` auth level, so the Functions host refuses a request without a key before this runs.
Lists and events are paged; `continuation` in an answer goes back as `?continuation=`. A call
retention is deleting is listed with `purging_since`, verifies as `"purging"`, and its events answer
410 `call_being_deleted` (they are partly gone).
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any, Protocol

from ..archive.store import PURGE_FIELD, Archive
from ..core.ids import valid_call_id
from ..errors import ApiError
from ..gateway.http import Request, Response, json_response
from ..settings import Settings
from .dates import BadRange, day_range
from .sessions import call_summary
from .transcript import Call, conversation_transcript, transcript
from .verify import conversation_calls, verify_call


class Process(Protocol):
    """What the audit routes take from the process's shared objects."""

    settings: Settings

    @property
    def archive(self) -> Archive: ...


MAX_RANGE_DAYS = 31
MAX_PAGE = 1000
EVENTS_PAGE_CHARS = 4_000_000  # an events page stops after this much payload (at least one event)


def _enabled(p: Process) -> None:
    if not p.settings.audit_api_enabled:
        raise ApiError(404, "audit_api_disabled", "the audit API is switched off (AUDIT_API_ENABLED)")


def _page_size(req: Request, default: int) -> int:
    raw = req.params.get("page_size", "") or str(default)
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_PAGE:
        raise ApiError(400, "invalid_page_size", f"page_size must be a whole number from 1 to {MAX_PAGE}")
    return int(raw)


def _token_in(req: Request) -> Any:
    raw = req.params.get("continuation", "")
    if not raw:
        return None
    try:
        return json.loads(base64.urlsafe_b64decode(raw.encode("ascii")))
    except (ValueError, binascii.Error, UnicodeEncodeError):
        raise ApiError(400, "invalid_continuation", "the continuation token is not one this API issued") from None


def _token_out(token: Any) -> str | None:
    return base64.urlsafe_b64encode(json.dumps(token).encode()).decode("ascii") if token else None


def _known_call(p: Process, call_id: str) -> dict[str, Any]:
    if not valid_call_id(call_id):
        raise ApiError(400, "invalid_call_id", "the call id is malformed")
    session = p.archive.find_session(call_id)
    if session is None:
        raise ApiError(404, "call_not_found", f"no call {call_id} in the archive")
    return session


def sessions(p: Process, req: Request, rid: str) -> Response:
    """GET /api/audit/sessions?from=&to=[&page_size=&continuation=]"""
    _enabled(p)
    try:
        first, last = day_range(req.params.get("from", ""), req.params.get("to", ""), MAX_RANGE_DAYS)
    except BadRange as exc:
        raise ApiError(400, exc.code, str(exc)) from None
    token = _token_in(req)
    if token is not None and not isinstance(token, dict):
        raise ApiError(400, "invalid_continuation", "the continuation token is not one this API issued")
    rows, nxt = p.archive.session_page(first, last, _page_size(req, 100), token)
    return json_response(
        200, {"from": first, "to": last, "sessions": [call_summary(r) for r in rows], "continuation": _token_out(nxt)}
    )


def _not_purging(call_id: str, row: dict[str, Any]) -> None:
    if row.get(PURGE_FIELD):
        raise ApiError(
            410,
            "call_being_deleted",
            f"call {call_id} is being deleted by retention (since {row[PURGE_FIELD]}); its events are partly gone",
        )


def session(p: Process, req: Request, rid: str, call_id: str) -> Response:
    """GET /api/audit/sessions/{call_id}[?page_size=&continuation=]: the summary and a page of events."""
    _enabled(p)
    row = _known_call(p, call_id)
    _not_purging(call_id, row)
    token = _token_in(req)
    if token is not None and not (isinstance(token, dict) and isinstance(token.get("after"), int)):
        raise ApiError(400, "invalid_continuation", "the continuation token is not one this API issued")
    after = token["after"] if token else -1
    limit = _page_size(req, 500)
    events: list[dict[str, Any]] = []
    chars, more = 0, False
    for rec in p.archive.read_events(call_id, after_seq=after):
        if len(events) >= limit or (events and chars + len(rec.payload) > EVENTS_PAGE_CHARS):
            more = True
            break
        chars += len(rec.payload)
        events.append(
            {
                "seq": rec.seq,
                "received_at": rec.received_at,
                "type": rec.event_type,
                "event_id": rec.event_id,
                "source": rec.source,
                "hash": rec.hash,
                "payload": rec.payload,
            }
        )
    body = {
        "summary": call_summary(row),
        "session": row if after < 0 else None,
        "events": events,
        "continuation": _token_out({"after": events[-1]["seq"]}) if more else None,
    }
    return Response(200, json.dumps(body, default=str).encode("utf-8"), {}, "application/json")


def verify(p: Process, req: Request, rid: str, call_id: str) -> Response:
    """GET /api/audit/sessions/{call_id}/verify"""
    _enabled(p)
    row = _known_call(p, call_id)
    return json_response(200, verify_call(p.archive, call_id, row).to_json())


def call_transcript(p: Process, req: Request, rid: str, call_id: str) -> Response:
    """GET /api/audit/sessions/{call_id}/transcript[?conversation=true]: who said what and when, read
    from the archived events (the session row keeps counts only); with `conversation=true`, every
    call of the call's conversation, first to last, on one clock, each call's start a `call` line."""
    _enabled(p)
    row = _known_call(p, call_id)
    flag = req.params.get("conversation", "false").lower()
    if flag not in ("true", "false", "1", "0"):
        raise ApiError(400, "invalid_conversation", "conversation must be true or false")
    rows = conversation_calls(p.archive, call_id) if flag in ("true", "1") else [row]
    for r in rows:
        _not_purging(str(r["call_id"]), r)
    calls: list[Call] = [(r, list(p.archive.read_events(str(r["call_id"])))) for r in rows]
    lines = conversation_transcript(calls) if len(calls) > 1 else transcript(calls[0][1])
    body = {
        "call_id": call_id,
        "calls": [str(r["call_id"]) for r in rows],
        "lines": [{"at": ln.at, "offset_s": ln.offset, "who": ln.who, "text": ln.text} for ln in lines],
    }
    return Response(200, json.dumps(body).encode("utf-8"), {}, "application/json")
