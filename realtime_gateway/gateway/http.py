"""The gateway's HTTP plumbing on a framework-neutral request/response, so the handlers run (and
are tested) without the Functions runtime; `function_app.py` converts to and from `func.Http*`.

`handle(route, services, req)` runs one route: request id, CORS (allowlist and preflight), errors
as JSON, one log line. A route is a plain function `route(services, req, rid, **kwargs) -> Response`;
`services` is a callable that gives the process's shared objects (a bad setting raises there, and
every route answers 500 naming it).
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Protocol

from requests.structures import CaseInsensitiveDict

from .. import redact
from ..errors import ApiError, error_body
from ..settings import Settings, SettingsError
from . import cors

log = logging.getLogger("realtime_gateway.http")

REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{8,64}$")


@dataclass
class Request:
    method: str
    url: str
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""
    params: Mapping[str, str] = field(default_factory=dict)
    route_params: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.method = self.method.upper()
        self.headers = CaseInsensitiveDict(self.headers)

    @property
    def origin(self) -> str | None:
        return self.headers.get("origin") or None


@dataclass
class Response:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    mimetype: str | None = None


Route = Callable[..., "Response"]  # route(services, req, rid, **kwargs) -> Response


class HasSettings(Protocol):
    settings: Settings


def json_response(status: int, data: Any, headers: Mapping[str, str] | None = None) -> Response:
    return Response(
        status, json.dumps(data, separators=(",", ":")).encode("utf-8"), dict(headers or {}), "application/json"
    )


def request_id_for(req: Request) -> str:
    given = req.headers.get("x-request-id", "")
    return given if REQUEST_ID.match(given) else uuid.uuid4().hex


def handle(route: Route, services: Callable[[], HasSettings], req: Request, **kwargs: Any) -> Response:
    started = time.monotonic()
    rid = request_id_for(req)
    name = route.__name__
    settings: Settings | None = None
    try:
        process = services()
        settings = process.settings
        cors.check_origin(settings, req.origin)
        if req.method == "OPTIONS":
            response = Response(204, headers=cors.preflight_headers(settings, req.origin))
        else:
            response = route(process, req, rid, **kwargs)
            response.headers.update(cors.response_headers(settings, req.origin))
    except SettingsError as exc:
        response = _error(500, "invalid_settings", str(exc), rid)
    except ApiError as exc:
        response = _error(exc.status, exc.code, exc.message, rid, exc.headers)
        # An allowed origin must be able to read the error (and Retry-After); a refused one not.
        if exc.code != "origin_not_allowed":
            response.headers.update(cors.response_headers(settings, req.origin))
    except Exception as exc:
        log.exception("%s rid=%s: unexpected %s", name, rid, type(exc).__name__)
        response = _error(500, "internal_error", "the gateway failed unexpectedly", rid)
        response.headers.update(cors.response_headers(settings, req.origin))
    response.headers["x-request-id"] = rid
    level = logging.WARNING if response.status >= 400 else logging.INFO
    log.log(
        level, "%s %s -> %d rid=%s %.0f ms", req.method, name, response.status, rid, (time.monotonic() - started) * 1000
    )
    return response


def _error(status: int, code: str, message: str, rid: str, headers: Mapping[str, str] | None = None) -> Response:
    return Response(status, error_body(code, redact.redact(message), rid), dict(headers or {}), "application/json")
