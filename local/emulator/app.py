"""The aiohttp application: service routes (wire contract), identity endpoint, admin routes."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from . import events as ev
from .audio import ReplyAudioTrack
from .calls import CLOSE_GOING_AWAY, CLOSE_NORMAL, Call
from .credentials import CredentialStore, EphemeralKey
from .faults import Fault, FaultRegistry
from .ids import new_id

log = logging.getLogger("realtime-emulator")

BASE = "/openai/v1/realtime"
SIDEBAND_REDIRECTED = BASE + "/redirected"  # where the redirect fault sends the sideband


class EmulatorState:
    def __init__(
        self,
        deployment: str,
        identity_header: str,
        token_lifetime: float,
        session_max_seconds: float,
        api_key: str | None,
        faults: FaultRegistry,
    ) -> None:
        self.deployment = deployment
        self.identity_header = identity_header
        self.session_max_seconds = session_max_seconds  # the session cap of every new call
        self.creds = CredentialStore(token_lifetime, api_key)
        self.faults = faults
        self.calls: dict[str, Call] = {}
        self.counters = {
            "identity_tokens": 0,
            "client_secrets": 0,
            "calls": 0,
            "hangups": 0,
            "sideband_connections": 0,
            "rejected": 0,
        }

    def stats(self) -> dict:
        active = sum(1 for c in self.calls.values() if c.state == "live")
        return {
            **self.counters,
            "active_calls": active,
            "faults_applied": self.faults.applied,
            "faults": self.faults.active(),
        }

    def new_call(
        self, session: dict, webrtc_filter: bool, session_max_seconds: float | None = None, call_id: str | None = None
    ) -> Call:
        call_id = call_id or new_id("rtc")  # a phone call keeps the id its webhook announced (sip.py)
        cap = self.session_max_seconds if session_max_seconds is None else session_max_seconds
        call = Call(call_id, session, webrtc_filter, cap)
        self.calls[call_id] = call
        self.counters["calls"] += 1
        return call


STATE = web.AppKey("state", EmulatorState)


# -- helpers ------------------------------------------------------------------------------
def error_response(status: int, message: str, code: str | None = None, headers=None) -> web.Response:
    """The service's JSON error shape; messages never contain credentials."""
    body = {"error": {"code": code or str(status), "message": message}}
    return web.json_response(body, status=status, headers=headers)


def fault_response(fault: Fault, status: int) -> web.Response:
    headers = {}
    if fault.retry_after is not None:
        headers["Retry-After"] = str(fault.retry_after)
    if fault.body is not None:
        return web.Response(
            status=status, text=fault.body, headers=headers, content_type=fault.content_type or "application/json"
        )
    code = {
        429: "too_many_requests",
        500: "server_error",
        502: "bad_gateway",
        503: "service_unavailable",
        504: "gateway_timeout",
    }.get(status, str(status))
    return error_response(status, f"Injected fault: HTTP {status}.", code, headers)


async def apply_fault(state: EmulatorState, target: str) -> tuple[Fault | None, web.Response | None]:
    """Consume the target's fault: wait its delay; an error response when it sets a status."""
    fault = state.faults.take(target)
    if fault is None:
        return None, None
    if fault.delay:
        await asyncio.sleep(fault.delay)
    if fault.status:
        return fault, fault_response(fault, fault.status)
    return fault, None


def unauthorized(state: EmulatorState, why: str) -> web.Response:
    state.counters["rejected"] += 1
    return error_response(401, f"Unauthorized: {why}.", "unauthorized")


def with_body_fault(fault: Fault | None, response: web.Response) -> web.Response:
    """A success status with a malformed body (and/or a wrong content type)."""
    if fault is None or (fault.body is None and fault.content_type is None):
        return response
    body = fault.body if fault.body is not None else response.text
    out = web.Response(status=response.status, text=body, content_type=fault.content_type or response.content_type)
    for name, value in response.headers.items():
        if name.lower() not in ("content-type", "content-length"):
            out.headers[name] = value
    return out


@dataclass
class Admitted:
    """What a service route has once its fault is applied and its caller authenticated."""

    state: EmulatorState
    fault: Fault | None  # a fault that lets the request through (delay, body, ...)
    key: EphemeralKey | None = None  # the ephemeral key, for routes that take one


Checked = tuple[EphemeralKey | None, web.Response | None]  # (the key it took, or why not)
Check = Callable[[EmulatorState, web.Request], Checked]
Handler = Callable[[web.Request, Admitted], Awaitable[web.StreamResponse]]
Route = Callable[[web.Request], Awaitable[web.StreamResponse]]


def identity_header_check(state: EmulatorState, request: web.Request) -> Checked:
    if request.headers.get("X-IDENTITY-HEADER") != state.identity_header:
        return None, web.json_response({"statusCode": 401, "message": "missing or wrong X-IDENTITY-HEADER"}, status=401)
    return None, None


def service_check(state: EmulatorState, request: web.Request) -> Checked:
    """A live Entra token or the api key."""
    why = state.creds.check_service(request.headers)
    return None, (unauthorized(state, why) if why else None)


def ephemeral_check(state: EmulatorState, request: web.Request) -> Checked:
    """A live ephemeral key (client secret)."""
    key, why = state.creds.check_ephemeral(request.headers)
    return key, (unauthorized(state, why or "") if key is None else None)


def service_route(fault_target: str, check: Check) -> Callable[[Handler], Route]:
    """The opening every service route shares: consume the target's fault (its delay; its error
    response when it sets a status), then authenticate; the handler gets both results."""

    def wrap(handler: Handler) -> Route:
        @functools.wraps(handler)
        async def route(request: web.Request) -> web.StreamResponse:
            state = request.app[STATE]
            fault, failed = await apply_fault(state, fault_target)
            if failed is not None:
                return failed
            key, denied = check(state, request)
            if denied is not None:
                return denied
            return await handler(request, Admitted(state, fault, key))

        return route

    return wrap


@web.middleware
async def cors(request: web.Request, handler):
    """Browsers post the SDP offer cross-origin, as they may to the real service."""
    if not request.path.startswith(BASE):
        return await handler(request)
    origin = request.headers.get("Origin")
    if request.method == "OPTIONS" and request.headers.get("Access-Control-Request-Method"):
        return web.Response(
            status=204,
            headers={
                "Access-Control-Allow-Origin": origin or "*",
                "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
                "Access-Control-Allow-Headers": request.headers.get(
                    "Access-Control-Request-Headers", "authorization, content-type, api-key"
                ),
                "Access-Control-Max-Age": "600",
                "Vary": "Origin",
            },
        )
    response = await handler(request)
    if origin and not isinstance(response, web.WebSocketResponse) and not response.prepared:
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Access-Control-Expose-Headers"] = "Location"
        response.headers["Vary"] = "Origin"
    return response


# -- identity -----------------------------------------------------------------------------
@service_route("identity", identity_header_check)
async def identity(request: web.Request, ok: Admitted) -> web.Response:
    state = ok.state
    resource = request.query.get("resource")
    if not resource or request.query.get("api-version") != "2019-08-01":
        return web.json_response(
            {"statusCode": 400, "message": "api-version=2019-08-01 and resource are required"}, status=400
        )
    token, expires_on = state.creds.issue_token()
    state.counters["identity_tokens"] += 1
    body = {"access_token": token, "expires_on": str(expires_on), "resource": resource, "token_type": "Bearer"}
    if request.query.get("client_id"):
        body["client_id"] = request.query["client_id"]
    return with_body_fault(ok.fault, web.json_response(body))


# -- service routes -----------------------------------------------------------------------
@service_route("client_secrets", service_check)
async def client_secrets(request: web.Request, ok: Admitted) -> web.Response:
    state = ok.state
    try:
        body = await request.json()
    except (ValueError, UnicodeDecodeError):
        return error_response(400, "The body must be JSON.", "invalid_json")
    if not isinstance(body, dict):
        return error_response(400, "The body must be a JSON object.", "invalid_request")
    expires_after = body.get("expires_after") or {"anchor": "created_at", "seconds": 600}
    seconds = expires_after.get("seconds", 600) if isinstance(expires_after, dict) else None
    if (
        not isinstance(expires_after, dict)
        or expires_after.get("anchor", "created_at") != "created_at"
        or not isinstance(seconds, int)
        or isinstance(seconds, bool)
        or not 10 <= seconds <= 7200
    ):
        return error_response(400, "expires_after must be {anchor: created_at, seconds: 10..7200}.", "invalid_value")
    session = body.get("session") or {}
    if not isinstance(session, dict) or session.get("type") != "realtime":
        return error_response(400, "session.type must be 'realtime'.", "invalid_value")
    if session.get("model") != state.deployment:
        return error_response(
            400, f"session.model must name a deployment of this resource ({state.deployment!r}).", "DeploymentNotFound"
        )
    merged = ev.merge(ev.default_session(state.deployment), session)
    key = state.creds.issue_key(seconds, merged)
    state.counters["client_secrets"] += 1
    payload = {
        "value": key.value,
        "expires_at": key.expires_at,
        "session": ev.session_object(merged, new_id("sess"), key.expires_at),
    }
    return with_body_fault(ok.fault, web.json_response(payload))


@service_route("calls", ephemeral_check)
async def create_call(request: web.Request, ok: Admitted) -> web.Response:
    state, fault, key = ok.state, ok.fault, ok.key
    assert key is not None  # ephemeral_check admits only a live key
    if request.content_type != "application/sdp":
        return error_response(400, "Content-Type must be application/sdp (the raw SDP offer).", "invalid_content_type")
    offer = await request.text()
    if not offer.startswith("v=0"):
        return error_response(400, "The body is not an SDP offer.", "invalid_sdp")
    webrtc_filter = request.query.get("webrtcfilter", "").lower() in ("on", "true", "1")
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        await pc.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
        track = ReplyAudioTrack()
        if any(t.kind == "audio" for t in pc.getTransceivers()):
            pc.addTrack(track)
        answer = await pc.createAnswer()
        await pc.setLocalDescription(answer)
    except Exception as exc:  # aiortc raises several types for a malformed offer
        await pc.close()
        return error_response(400, f"The SDP offer was rejected: {exc}", "invalid_sdp")
    call = state.new_call(ev.merge(key.session, {}), webrtc_filter)
    call.attach_peer(pc, track)
    headers = {} if fault and fault.no_location else {"Location": f"{BASE}/calls/{call.call_id}"}
    response = web.Response(status=201, text=pc.localDescription.sdp, content_type="application/sdp", headers=headers)
    return with_body_fault(fault, response)


@service_route("hangup", service_check)
async def hangup(request: web.Request, ok: Admitted) -> web.Response:
    state = ok.state
    call = state.calls.get(request.match_info["call_id"])
    if call is None or call.state != "live":
        return error_response(404, "No live call with this id.", "call_not_found")
    state.counters["hangups"] += 1
    await call.end(CLOSE_GOING_AWAY, "hangup")
    return with_body_fault(ok.fault, web.Response(status=200))


@service_route("sideband", service_check)
async def sideband(request: web.Request, ok: Admitted) -> web.StreamResponse:
    state, fault = ok.state, ok.fault
    redirected = request.path == SIDEBAND_REDIRECTED
    call_id = request.query.get("call_id")
    if not call_id:
        return error_response(400, "call_id is required (the emulator has no model-only sessions).", "missing_call_id")
    call = state.calls.get(call_id)
    if call is None or call.state != "live":
        return error_response(404, "No live call with this id.", "call_not_found")
    if fault and fault.redirect and not redirected:
        # Same origin, another path: a client must follow it with the same headers.
        scheme = "wss" if request.secure else "ws"
        target = f"{scheme}://{request.host}{SIDEBAND_REDIRECTED}?{request.query_string}"
        return web.Response(status=307, headers={"Location": target})
    ws = web.WebSocketResponse(heartbeat=None, max_msg_size=16 * 1024 * 1024)
    if not ws.can_prepare(request).ok:
        return error_response(400, "This endpoint needs a WebSocket upgrade.", "websocket_required")
    await ws.prepare(request)
    state.counters["sideband_connections"] += 1
    obs = call.attach(ws, request.transport, fault.drop_after if fault else None)
    pump = obs.task
    assert pump is not None  # attach() starts it

    async def read() -> None:
        async for msg in ws:
            if msg.type == web.WSMsgType.TEXT:
                call.handle_client_event(msg.data)

    reader = asyncio.ensure_future(read())
    try:
        await asyncio.wait([reader, pump], return_when=asyncio.FIRST_COMPLETED)
        if obs.close_code is not None:
            # Server-side close: stop reading first, so aiohttp's close() waits for the client's
            # close frame (RFC 6455) instead of dropping the TCP connection under it.
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
            await ws.close(code=obs.close_code)
        else:
            await asyncio.wait([reader], timeout=10)
    finally:
        reader.cancel()
        call.detach(obs)
    return ws


# -- admin --------------------------------------------------------------------------------
async def admin_set_fault(request: web.Request) -> web.Response:
    state: EmulatorState = request.app[STATE]
    try:
        spec = await request.json()
        target = spec.pop("target")
        fault = state.faults.set(target, **spec)
    except (ValueError, KeyError, TypeError) as exc:
        return error_response(400, f"bad fault: {exc}", "bad_fault")
    return web.json_response(vars(fault))


async def admin_clear_faults(request: web.Request) -> web.Response:
    request.app[STATE].faults.clear()
    return web.json_response({"cleared": True})


async def admin_stats(request: web.Request) -> web.Response:
    return web.json_response(request.app[STATE].stats())


async def admin_new_call(request: web.Request) -> web.Response:
    state: EmulatorState = request.app[STATE]
    # optional body: {"session": <merged into the default session>, "delta_interval": <seconds>,
    # "session_max_seconds": <this call's cap>}
    try:
        spec = await request.json() if request.can_read_body else {}
        session = ev.merge(ev.default_session(state.deployment), dict(spec.get("session") or {}))
        interval = float(spec.get("delta_interval") or 0)
        cap = spec.get("session_max_seconds")
        cap = _positive(cap) if cap is not None else None
    except (ValueError, TypeError, AttributeError) as exc:
        return error_response(400, f"bad call spec: {exc}", "bad_call")
    call = state.new_call(session, webrtc_filter=True, session_max_seconds=cap)
    call.delta_interval = interval
    return web.json_response({"call_id": call.call_id})


def _positive(value) -> float:
    seconds = float(value)
    if not seconds > 0:
        raise ValueError("session_max_seconds must be > 0")
    return seconds


def _call_or_404(request: web.Request) -> Call | None:
    return request.app[STATE].calls.get(request.match_info["call_id"])


async def admin_conversation(request: web.Request) -> web.Response:
    call = _call_or_404(request)
    if call is None:
        return error_response(404, "unknown call", "call_not_found")
    return web.json_response(call.conversation.view())


async def admin_expiry(request: web.Request) -> web.Response:
    """`{"session_max_seconds": s}`: a live call's cap, counted from its start (a past cap expires it now)."""
    call = _call_or_404(request)
    if call is None or call.state != "live":
        return error_response(404, "no live call with this id", "call_not_found")
    try:
        call.set_session_max(_positive((await request.json())["session_max_seconds"]))
    except (ValueError, KeyError, TypeError) as exc:
        return error_response(400, f"bad expiry: {exc}", "bad_expiry")
    return web.json_response(call.info())


async def admin_call_info(request: web.Request) -> web.Response:
    call = _call_or_404(request)
    if call is None:
        return error_response(404, "unknown call", "call_not_found")
    return web.json_response(call.info())


async def admin_script(request: web.Request) -> web.Response:
    call = _call_or_404(request)
    if call is None or call.state != "live":
        return error_response(404, "no live call with this id", "call_not_found")
    try:
        spec = await request.json() if request.can_read_body else {}
        responses = int(spec.get("responses", 1))
        pad = spec.get("pad_bytes")
        pad = int(pad) if pad is not None else None
    except (ValueError, TypeError) as exc:
        return error_response(400, f"bad script: {exc}", "bad_script")
    wait = request.query.get("wait", "1") not in ("0", "false")
    task = call.spawn(call.script(responses, spec.get("text"), pad))
    if wait:
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            pass  # the call ended while its script ran; info() says so
    return web.json_response(call.info())


async def admin_end(request: web.Request) -> web.Response:
    call = _call_or_404(request)
    if call is None or call.state != "live":
        return error_response(404, "no live call with this id", "call_not_found")
    await call.end(CLOSE_NORMAL, "ended_by_admin")
    return web.json_response(call.info())


def build_app(state: EmulatorState) -> web.Application:
    """The WebRTC service's routes; the phone line's (sip.py, built on this module's helpers) are
    added by emulator.py."""
    app = web.Application(middlewares=[cors], client_max_size=4 * 1024 * 1024)
    app[STATE] = state
    app.router.add_get("/msi/token", identity)
    app.router.add_post(f"{BASE}/client_secrets", client_secrets)
    app.router.add_post(f"{BASE}/calls", create_call)
    app.router.add_post(f"{BASE}/calls/{{call_id}}/hangup", hangup)
    app.router.add_get(BASE, sideband)
    app.router.add_get(SIDEBAND_REDIRECTED, sideband)
    app.router.add_post("/_emulator/faults", admin_set_fault)
    app.router.add_delete("/_emulator/faults", admin_clear_faults)
    app.router.add_get("/_emulator/stats", admin_stats)
    app.router.add_post("/_emulator/calls", admin_new_call)
    app.router.add_get("/_emulator/calls/{call_id}", admin_call_info)
    app.router.add_get("/_emulator/calls/{call_id}/conversation", admin_conversation)
    app.router.add_post("/_emulator/calls/{call_id}/expiry", admin_expiry)
    app.router.add_post("/_emulator/calls/{call_id}/script", admin_script)
    app.router.add_post("/_emulator/calls/{call_id}/end", admin_end)
    return app
