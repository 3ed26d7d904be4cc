"""`GET /api/calls/{call_id}`: whether the recorder is there yet (waiting / attached / ended)."""
from __future__ import annotations

from typing import Any

from .archive import Archive

PUBLIC_FIELDS = ("attached_at", "attach_delay_ms", "ended_at", "end_reason", "created_at")


def call_status(archive: Archive, call_id: str) -> dict[str, Any]:
    """The call's recording state. Unknown calls read as `waiting`: the listener may not have
    started yet, and the status must not reveal which call ids exist beyond that."""
    row = archive.find_session(call_id)
    if row is None:
        return {"call_id": call_id, "state": "waiting", "recorded": False}
    state = row.get("state") or "waiting"
    if state not in ("waiting", "attached", "ended"):
        state = "waiting"
    out: dict[str, Any] = {"call_id": call_id, "state": state, "recorded": bool(row.get("attached_at"))}
    for name in PUBLIC_FIELDS:
        if row.get(name) not in (None, ""):
            out[name] = row[name]
    out["events"] = int(row.get("events") or 0)
    return out


def status_response(req: Any, call_id: str) -> Any:
    """The HTTP side of the route, with the gateway's CORS and error body (http_api types)."""
    import logging
    import uuid

    from . import cors
    from .errors import ApiError, error_body
    from .http_api import Response, json_response
    from .listener_queue import shared_deps
    from .realtime_api import valid_call_id
    from .settings import SettingsError

    rid = uuid.uuid4().hex
    settings = None
    try:
        settings, archive, _ = shared_deps()
        cors.check_origin(settings, req.origin)
        if req.method == "OPTIONS":
            return Response(204, headers=cors.preflight_headers(settings, req.origin))
        if not valid_call_id(call_id):
            raise ApiError(400, "invalid_call_id", "the call id is malformed")
        response = json_response(200, call_status(archive, call_id))
        response.headers.update(cors.response_headers(settings, req.origin))
        response.headers["Cache-Control"] = "no-store"
        return response
    except ApiError as exc:
        headers = {} if exc.code == "origin_not_allowed" else cors.response_headers(settings, req.origin)
        return Response(exc.status, error_body(exc.code, exc.message, rid), headers, "application/json")
    except SettingsError as exc:
        return Response(500, error_body("invalid_settings", str(exc), rid), {}, "application/json")
    except Exception as exc:  # storage down: say so, without details
        logging.getLogger(__name__).exception("call status for %s failed: %s", call_id, type(exc).__name__)
        return Response(503, error_body("archive_unavailable", "the call archive cannot be read now", rid),
                        cors.response_headers(settings, req.origin), "application/json")
