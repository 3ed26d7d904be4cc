"""The gateway's HTTP handlers on a framework-neutral request/response, so they run (and are
tested) without the Functions runtime. `function_app.py` converts to and from `func.Http*`.

Settings, the credential, the token cache and the HTTP session are built once per process, on
first use: a bad setting then answers every route with a 500 naming it instead of crashing import.
"""
from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from . import cors, redact
from .archive import Archive
from .call_message import CallMessage
from .call_status import call_status
from .errors import ApiError, error_body
from .identity import BearerTokenProvider
from .principal import principal_from_headers
from .realtime_api import RealtimeApi, valid_call_id
from .sdp import offer_from_body
from .settings import Settings, SettingsError, load_settings
from .storage_check import storage_reachable
from .table_service import table_service_from_env

log = logging.getLogger("realtime_gateway.http")
redact.install_record_factory()

REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{8,64}$")
CONNECT_BUDGET_CAP = 200.0  # seconds; Azure cuts HTTP responses at 230 s


class Headers(dict):
    """Case-insensitive header map (keys kept lower-case)."""

    def __init__(self, items: Mapping[str, str] | None = None) -> None:
        super().__init__({k.lower(): v for k, v in (items or {}).items()})

    def get(self, key: str, default: Any = None) -> Any:  # type: ignore[override]
        return super().get(key.lower(), default)

    def __getitem__(self, key: str) -> str:
        return super().__getitem__(key.lower())

    def __contains__(self, key: object) -> bool:
        return super().__contains__(str(key).lower())


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
        self.headers = Headers(self.headers)

    @property
    def origin(self) -> str | None:
        return self.headers.get("origin") or None


@dataclass
class Response:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    mimetype: str | None = None


def json_response(status: int, data: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(status, json.dumps(data, separators=(",", ":")).encode("utf-8"),
                    dict(headers or {}), "application/json")


class Gateway:
    """The handlers; each returns a Response and raises ApiError for anything the caller did wrong
    or the service could not do. `handle()` turns those into the JSON error body."""

    def __init__(self, settings: Settings, tokens: BearerTokenProvider | None, api: RealtimeApi,
                 env: Mapping[str, str] | None = None, clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.tokens = tokens
        self.api = api
        self.env = env if env is not None else os.environ
        self.clock = clock
        self._archive: Archive | None = None
        self._archive_lock = threading.Lock()

    @property
    def archive(self) -> Archive:
        """The call archive's tables, built on first use (the HTTP-only routes never need it)."""
        with self._archive_lock:
            if self._archive is None:
                self._archive = Archive(table_service_from_env(self.env), self.settings.events_table,
                                        self.settings.sessions_table)
            return self._archive

    @classmethod
    def from_settings(cls, settings: Settings, env: Mapping[str, str] | None = None) -> "Gateway":
        redact.add_known_secret(settings.api_key)
        tokens = None if settings.api_key else BearerTokenProvider(settings)
        return cls(settings, tokens, RealtimeApi(settings, tokens), env)

    def _deadline(self) -> float:
        # Room for the mint (with retries) and the SDP post, each bounded by http_timeout.
        return time.monotonic() + min(CONNECT_BUDGET_CAP, 2 * self.settings.http_timeout + 5)

    def _principal(self, req: Request) -> dict[str, Any] | None:
        principal = principal_from_headers(req.headers)
        if principal is None and self.settings.require_principal:
            raise ApiError(401, "principal_required",
                           "sign in first: this gateway requires an authenticated principal")
        return principal

    # --- routes ----------------------------------------------------------------------------
    def connect(self, req: Request, rid: str, enqueue: Callable[[str], None] | None = None) -> Response:
        principal = self._principal(req)
        offer = offer_from_body(req.headers.get("content-type"), req.body)
        deadline = self._deadline()
        secret = self.api.mint_client_secret(deadline, rid)
        answer = self.api.post_offer(secret, offer, deadline, rid)
        started = self.clock()
        message = CallMessage(
            call_id=answer.call_id, started_at=started, deadline=started + self.settings.max_call_seconds,
            origin=req.origin, principal=principal, request_id=rid, model=self.settings.deployment,
            voice=(self.settings.session_policy.get("audio") or {}).get("output", {}).get("voice"))
        listener = "queued"
        try:
            if enqueue is None:
                raise RuntimeError("no queue output binding")
            enqueue(message.to_json())
        except Exception as exc:  # the call works without its recording; say so, don't fail it
            listener = "not-queued"
            log.error("connect rid=%s call=%s: listener message not queued (%s: %s)",
                      rid, answer.call_id, type(exc).__name__, exc)
        log.info("connect rid=%s call=%s listener=%s", rid, answer.call_id, listener)
        return Response(201, answer.sdp.encode("utf-8"),
                        {"x-call-id": answer.call_id, "x-listener": listener, "Cache-Control": "no-store"},
                        "application/sdp")

    def token(self, req: Request, rid: str) -> Response:
        if not self.settings.token_route_enabled:
            raise ApiError(404, "token_route_disabled",
                           "GET /api/token is switched off (TOKEN_ROUTE_ENABLED=false); use POST /api/connect")
        self._principal(req)
        secret = self.api.mint_client_secret(self._deadline(), rid)
        log.info("token rid=%s minted a client secret expiring at %d", rid, secret.expires_at)
        # Only what a client needs for its own SDP exchange: never the session policy.
        return json_response(200, {"token": secret.value, "expires_at": secret.expires_at,
                                   "endpoint": self.settings.endpoint,
                                   "deployment": self.settings.deployment},
                             {"Cache-Control": "no-store"})

    def hangup(self, req: Request, rid: str, call_id: str) -> Response:
        self._principal(req)
        if not valid_call_id(call_id):
            raise ApiError(400, "invalid_call_id", "the call id is malformed")
        self.api.hangup(call_id, time.monotonic() + self.settings.http_timeout)
        log.info("hangup rid=%s call=%s", rid, call_id)
        return json_response(200, {"call_id": call_id, "status": "ended"})

    def call_state(self, req: Request, rid: str, call_id: str) -> Response:
        if not valid_call_id(call_id):
            raise ApiError(400, "invalid_call_id", "the call id is malformed")
        try:
            state = call_status(self.archive, call_id)
        except Exception as exc:  # storage down: say so, without details
            log.error("call state rid=%s call=%s: archive unreadable (%s)", rid, call_id, type(exc).__name__)
            raise ApiError(503, "archive_unavailable", "the call archive cannot be read now") from None
        return json_response(200, state, {"Cache-Control": "no-store"})

    def health(self, req: Request, rid: str) -> Response:
        checks: dict[str, str] = {"settings": "ok"}
        if self.tokens is None:
            checks["identity"] = "not used (api key)"
        else:
            try:
                self.tokens.token()
                checks["identity"] = "ok"
            except ApiError as exc:
                checks["identity"] = exc.message
        checks["storage"] = storage_reachable(self.env)[1]
        healthy = all(v == "ok" or v.startswith("not used") for v in checks.values())
        return json_response(200 if healthy else 503,
                             {"status": "ok" if healthy else "unhealthy", "checks": checks})


# --- process-wide state and the entry point function_app.py calls ----------------------------
_lock = threading.Lock()
_gateway: Gateway | None = None
_settings_error: SettingsError | None = None


def get_gateway(env: Mapping[str, str] | None = None) -> Gateway:
    """The process's Gateway, built on first use; raises the same SettingsError on every call."""
    global _gateway, _settings_error
    if _gateway is not None:
        return _gateway
    with _lock:
        if _gateway is None:
            if _settings_error is not None:
                raise _settings_error
            try:
                settings = load_settings(env)
            except SettingsError as exc:
                _settings_error = exc
                log.error("%s", exc)
                raise
            _gateway = Gateway.from_settings(settings, env)
        return _gateway


def reset_gateway(gateway: Gateway | None = None) -> None:
    """Tests: drop (or replace) the process's Gateway so the next request reloads settings."""
    global _gateway, _settings_error
    with _lock:
        _gateway, _settings_error = gateway, None


def request_id_for(req: Request) -> str:
    given = req.headers.get("x-request-id", "")
    return given if REQUEST_ID.match(given) else uuid.uuid4().hex


def handle(route: str, req: Request, **kwargs: Any) -> Response:
    """Run one route: request id, CORS (allowlist and preflight), errors as JSON, one log line."""
    started = time.monotonic()
    rid = request_id_for(req)
    settings: Settings | None = None
    try:
        gateway = get_gateway()
        settings = gateway.settings
        cors.check_origin(settings, req.origin)
        if req.method == "OPTIONS":
            response = Response(204, headers=cors.preflight_headers(settings, req.origin))
        else:
            response = getattr(gateway, route)(req, rid, **kwargs)
            response.headers.update(cors.response_headers(settings, req.origin))
    except SettingsError as exc:
        response = _error(500, "invalid_settings", str(exc), rid)
    except ApiError as exc:
        response = _error(exc.status, exc.code, exc.message, rid, exc.headers)
        # An allowed origin must be able to read the error (and Retry-After); a refused one not.
        if exc.code != "origin_not_allowed":
            response.headers.update(cors.response_headers(settings, req.origin))
    except Exception as exc:
        log.exception("%s rid=%s: unexpected %s", route, rid, type(exc).__name__)
        response = _error(500, "internal_error", "the gateway failed unexpectedly", rid)
        response.headers.update(cors.response_headers(settings, req.origin))
    response.headers["x-request-id"] = rid
    level = logging.WARNING if response.status >= 400 else logging.INFO
    log.log(level, "%s %s -> %d rid=%s %.0f ms", req.method, route, response.status, rid,
            (time.monotonic() - started) * 1000)
    return response


def _error(status: int, code: str, message: str, rid: str,
           headers: Mapping[str, str] | None = None) -> Response:
    return Response(status, error_body(code, redact.redact(message), rid), dict(headers or {}),
                    "application/json")
