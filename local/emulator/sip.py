"""SIP's control plane, as the service speaks it (Azure OpenAI "Use the GPT Realtime API via SIP"):

- `POST /admin/sip/calls` (also `/_emulator/sip/calls`) `{"from","to","say":[...],"dtmf":"..."}`: a
  phone rings. The emulator answers `{"call_id"}` and delivers the signed `realtime.call.incoming`
  webhook to the configured URL (SIP_WEBHOOK_URL), again with backoff while it gets no 2xx.
- `POST /openai/v1/realtime/calls/{id}/accept | reject | refer` (hang-up is the shared route).
- An accepted call runs: its sideband gets `session.created`, then for each line the scripted caller
  "says" the transcription events and a reply (a line "call tool <name> <arguments>" makes the model
  call that declared tool, and the caller waits for its answer, replies.py), each DTMF key as `input_audio_buffer.dtmf_event_received`,
  and then the caller hangs up. Neither accepted nor rejected within `answer_timeout`: unanswered.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import time
from dataclasses import dataclass, field, fields
from typing import Any

import aiohttp
from aiohttp import web

from . import events as ev
from .app import BASE, STATE, Admitted, EmulatorState, error_response, service_check, service_route
from .calls import CLOSE_NORMAL, Call
from .ids import new_id

log = logging.getLogger("realtime-emulator.sip")

ATTACH_WAIT = 10.0  # seconds an accepted call waits for its sideband before the caller speaks anyway
CALLER_HANGUP = "caller_left"  # the close reason when the scripted caller hangs up
SPOKEN_MS = 1200  # how long each of the caller's sentences lasts
TOOL_WAIT = 10.0  # seconds the scripted caller waits for a tool's answer before it speaks on


@dataclass
class PhoneCall:
    call_id: str
    caller: str
    line: str
    say: list[str]
    dtmf: str
    state: str = "ringing"  # ringing | accepted | rejected | unanswered | transferred | ended
    deliveries: list[int] = field(default_factory=list)  # the status of each webhook attempt (0: no answer)
    webhooks: list[dict] = field(default_factory=list)  # each delivered request: headers and body
    accept_body: dict | None = None
    reject_status: int | None = None
    refer_targets: list[str] = field(default_factory=list)
    end_reason: str | None = None  # caller_left | hangup (through the service) | transferred | ...

    def info(self) -> dict:
        """What the control API shows of the call: everything but the caller's script."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("caller", "line", "say", "dtmf")}


class SipLine:
    """The emulator's SIP side: where webhooks go, with which secret, and the phone calls."""

    def __init__(self, webhook_url: str = "", webhook_secret: str = "", answer_timeout: float = 10.0) -> None:
        self.webhook_url, self.webhook_secret, self.answer_timeout = webhook_url, webhook_secret, answer_timeout
        self.retry_delays = (0.2, 0.5, 1.0, 2.0, 4.0)  # the service retries with backoff
        self.calls: dict[str, PhoneCall] = {}

    def sign(self, msg_id: str, timestamp: int, body: bytes) -> str:
        key = base64.b64decode(self.webhook_secret.removeprefix("whsec_"))
        mac = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
        return "v1," + base64.b64encode(mac).decode()

    def event(self, call: PhoneCall) -> dict:
        return {
            "object": "event",
            "id": new_id("evt"),
            "type": "realtime.call.incoming",
            "created_at": int(time.time()),
            "data": {
                "call_id": call.call_id,
                "sip_headers": [
                    {"name": "From", "value": f'"Caller" <sip:{call.caller}@trunk.example.net>;tag={new_id("t")}'},
                    {"name": "To", "value": f"<sip:{call.line}@sip.emulator.invalid>"},
                    {"name": "Call-ID", "value": f"{new_id('sipcall')}@trunk.example.net"},
                ],
            },
        }


SIP = web.AppKey("sip", SipLine)


async def _deliver(line: SipLine, call: PhoneCall) -> None:
    """The webhook, re-signed at each attempt under the same webhook-id, until a 2xx or the retries end."""
    body = json.dumps(line.event(call), separators=(",", ":")).encode()
    msg_id = new_id("wh")
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        for delay in (0.0, *line.retry_delays):
            if delay:
                await asyncio.sleep(delay)
            if call.state != "ringing":
                return
            ts = int(time.time())
            headers = {
                "content-type": "application/json",
                "webhook-id": msg_id,
                "webhook-timestamp": str(ts),
                "webhook-signature": line.sign(msg_id, ts, body),
            }
            call.webhooks.append({"headers": headers, "body": body.decode()})
            try:
                async with session.post(line.webhook_url, data=body, headers=headers) as resp:
                    call.deliveries.append(resp.status)
                    if 200 <= resp.status < 300:
                        return
            except (TimeoutError, aiohttp.ClientError):
                call.deliveries.append(0)


async def _ring(state: EmulatorState, line: SipLine, call: PhoneCall) -> None:
    delivery = asyncio.ensure_future(_deliver(line, call))
    deadline = time.monotonic() + line.answer_timeout
    while call.state == "ringing" and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    if call.state == "ringing":
        call.state = "unanswered"
        delivery.cancel()
    else:  # answered while its delivery's answer is on the way: record that answer too
        await asyncio.wait([delivery], timeout=10)


async def _converse(state: EmulatorState, call: PhoneCall) -> None:
    """The scripted caller on an accepted call, and how the call ended (the caller, a hang-up through
    the service, a transfer)."""
    live = state.calls[call.call_id]
    try:
        await _script(live, call)
    finally:  # also when a hang-up or a transfer ends the call under it (the call's tasks are cancelled)
        if live.state != "live":
            call.end_reason = live.end_reason
            if call.state == "accepted":
                call.state = "ended"


async def _script(live: Call, call: PhoneCall) -> None:
    """What the caller says, its keys, then it hangs up."""
    deadline = time.monotonic() + ATTACH_WAIT
    while not live.observers and time.monotonic() < deadline and live.state == "live":
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.2)  # session.created first
    for text in call.say:
        if live.state != "live":
            return
        item_id = new_id("item")
        live.emit(ev.event("input_audio_buffer.speech_started", audio_start_ms=0, item_id=item_id))
        await live.speech_turn(item_id, 0, SPOKEN_MS, text)
        await _settle(live)
    for key in call.dtmf:
        if live.state != "live":
            return
        # no event_id: the openai type of this one server event has none (the archive names it itself)
        live.emit({"type": "input_audio_buffer.dtmf_event_received", "event": key, "received_at": int(time.time())})
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.3)
    await live.end(CLOSE_NORMAL, CALLER_HANGUP)


async def _settle(live: Call) -> None:
    """A caller waits for an answer: while a function call awaits its output, an output awaits the
    response it asked for, or a response runs (bounded, and over as soon as the call is)."""
    deadline = time.monotonic() + TOOL_WAIT
    while live.state == "live" and time.monotonic() < deadline:
        if not live._tool_names and live._tool_output is None and not live._turn_lock.locked():
            return
        await asyncio.sleep(0.02)


async def admin_new_phone_call(request: web.Request) -> web.Response:
    state, line = request.app[STATE], request.app[SIP]
    try:
        spec = await request.json()
        caller, to = str(spec["from"]), str(spec["to"])
        say = [str(s) for s in spec.get("say") or []]
        dtmf = str(spec.get("dtmf") or "")
        if not all(c in "0123456789*#ABCD" for c in dtmf):
            raise ValueError("dtmf keys are 0-9 * # A-D")
    except (ValueError, KeyError, TypeError) as exc:
        return error_response(400, f"bad phone call: {exc}", "bad_call")
    if not line.webhook_url or not line.webhook_secret:
        return error_response(409, "set SIP_WEBHOOK_URL and SIP_WEBHOOK_SECRET first", "sip_not_configured")
    call = PhoneCall(new_id("rtc"), caller, to, say, dtmf)
    line.calls[call.call_id] = call
    state.counters["calls"] += 1
    task = asyncio.ensure_future(_ring(state, line, call))
    request.app[TASKS].add(task)
    task.add_done_callback(request.app[TASKS].discard)
    return web.json_response({"call_id": call.call_id}, status=201)


async def admin_phone_call(request: web.Request) -> web.Response:
    call = request.app[SIP].calls.get(request.match_info["call_id"])
    if call is None:
        return error_response(404, "unknown phone call", "call_not_found")
    return web.json_response(call.info())


async def admin_configure(request: web.Request) -> web.Response:
    """`{"webhook_url", "webhook_secret", "answer_timeout"}`: where this emulator's webhooks go."""
    line: SipLine = request.app[SIP]
    spec = await request.json()
    line.webhook_url = str(spec.get("webhook_url", line.webhook_url))
    line.webhook_secret = str(spec.get("webhook_secret", line.webhook_secret))
    line.answer_timeout = float(spec.get("answer_timeout", line.answer_timeout))
    return web.json_response({"webhook_url": line.webhook_url, "answer_timeout": line.answer_timeout})


def _pending(request: web.Request) -> PhoneCall | None:
    call = request.app[SIP].calls.get(request.match_info["call_id"])
    return call if call is not None and call.state == "ringing" else None


def _validated(kind: str, body: Any) -> str | None:
    """What is wrong with a control body, by the `openai` package's params types (when installed)."""
    try:
        from openai.types.realtime import call_accept_params, call_refer_params, call_reject_params
        from pydantic import TypeAdapter, ValidationError
    except ImportError:  # pragma: no cover - the dev environment has them
        return None if isinstance(body, dict) else "the body must be a JSON object"
    params = {
        "accept": call_accept_params.CallAcceptParams,
        "reject": call_reject_params.CallRejectParams,
        "refer": call_refer_params.CallReferParams,
    }[kind]
    try:
        TypeAdapter(params).validate_python(body)
    except ValidationError as exc:
        return str(exc).splitlines()[0] + ": " + "; ".join(e["msg"] for e in exc.errors()[:3])
    return None


async def _json(request: web.Request) -> Any:
    try:
        return await request.json() if request.can_read_body else {}
    except ValueError:
        return None


@service_route("accept", service_check)
async def accept(request: web.Request, ok: Admitted) -> web.Response:
    state = ok.state
    call = _pending(request)
    if call is None:
        return error_response(404, "No pending call with this id.", "call_not_found")
    body = await _json(request)
    problem = _validated("accept", body)
    if problem is None and (not body.get("model") or not body.get("instructions")):
        problem = "model and instructions are required"
    if problem is not None:
        return error_response(400, f"Invalid accept body: {problem}", "invalid_request_error")
    call.accept_body, call.state = body, "accepted"
    session = ev.merge(ev.default_session(state.deployment), {k: v for k, v in body.items() if k != "model"})
    live = state.new_call(session, webrtc_filter=False, call_id=call.call_id)
    live.spawn(_converse(state, call))
    return web.Response(status=200)


@service_route("reject", service_check)
async def reject(request: web.Request, ok: Admitted) -> web.Response:
    call = _pending(request)
    if call is None:
        return error_response(404, "No pending call with this id.", "call_not_found")
    body = await _json(request)
    problem = _validated("reject", body)
    if problem is not None:
        return error_response(400, f"Invalid reject body: {problem}", "invalid_request_error")
    call.reject_status, call.state = int(body.get("status_code", 603)), "rejected"
    return web.Response(status=200)


@service_route("refer", service_check)
async def refer(request: web.Request, ok: Admitted) -> web.Response:
    state = ok.state
    live = state.calls.get(request.match_info["call_id"])
    call = request.app[SIP].calls.get(request.match_info["call_id"])
    if live is None or call is None or live.state != "live":
        return error_response(404, "No live SIP call with this id.", "call_not_found")
    body = await _json(request)
    problem = _validated("refer", body)
    if problem is not None:
        return error_response(400, f"Invalid refer body: {problem}", "invalid_request_error")
    call.refer_targets.append(body["target_uri"])
    call.state = "transferred"
    await live.end(CLOSE_NORMAL, "transferred")
    return web.Response(status=200)


TASKS = web.AppKey("sip_tasks", set)


def add_sip_routes(app: web.Application, line: SipLine) -> None:
    app[SIP] = line
    app[TASKS] = set()
    for prefix in ("/admin", "/_emulator"):
        app.router.add_post(f"{prefix}/sip/calls", admin_new_phone_call)
        app.router.add_get(f"{prefix}/sip/calls/{{call_id}}", admin_phone_call)
        app.router.add_post(f"{prefix}/sip/config", admin_configure)
    app.router.add_post(f"{BASE}/calls/{{call_id}}/accept", accept)
    app.router.add_post(f"{BASE}/calls/{{call_id}}/reject", reject)
    app.router.add_post(f"{BASE}/calls/{{call_id}}/refer", refer)
