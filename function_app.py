"""The realtime gateway's Azure Functions app: every trigger and binding, each a thin handler.

The logic lives in `realtime_gateway/` (one folder per stage of a call's path); this file only says
which route or queue calls what. Nothing below it imports azure.functions.
"""

import azure.functions as func

from realtime_gateway import redact, telemetry
from realtime_gateway.archive.retention import purge
from realtime_gateway.audit import api as audit_api
from realtime_gateway.gateway import routes, sip
from realtime_gateway.gateway.http import Request, Response, Route, handle
from realtime_gateway.listener.handler import handle_call_message
from realtime_gateway.services import get_services

redact.install_record_factory()  # before any trigger runs: no secret reaches a log record
telemetry.setup()  # exporters from the app settings (docs/telemetry.md); off when none is set
app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)


def _http(route: Route, req: func.HttpRequest, **kwargs) -> func.HttpResponse:
    neutral = Request(
        req.method, req.url, dict(req.headers), req.get_body() or b"", dict(req.params), dict(req.route_params)
    )
    resp: Response = handle(route, get_services, neutral, **kwargs)
    return func.HttpResponse(resp.body, status_code=resp.status, headers=resp.headers, mimetype=resp.mimetype)


# --- HTTP: the gateway -------------------------------------------------------------------
# Anonymous at the Functions level (a browser cannot keep a function key); guarded by the origin
# allowlist and the optional principal inside the handlers. OPTIONS is registered so preflight
# works the same on the local host and in Azure when siteConfig.cors is not used.


@app.route(route="connect", methods=["POST", "OPTIONS"])
@app.queue_output(arg_name="listener", queue_name="%LISTENER_QUEUE%", connection="AzureWebJobsStorage")
def gateway_connect(req: func.HttpRequest, listener: func.Out[str]) -> func.HttpResponse:
    return _http(routes.connect, req, enqueue=listener.set)


@app.route(route="token", methods=["GET", "OPTIONS"])
def gateway_token(req: func.HttpRequest) -> func.HttpResponse:
    return _http(routes.token, req)


@app.route(route="calls/{call_id}/hangup", methods=["POST", "OPTIONS"])
def gateway_hangup(req: func.HttpRequest) -> func.HttpResponse:
    return _http(routes.hangup, req, call_id=req.route_params["call_id"])


@app.route(route="calls/{call_id}", methods=["GET", "OPTIONS"])
def call_state(req: func.HttpRequest) -> func.HttpResponse:
    return _http(routes.call_state, req, call_id=req.route_params["call_id"])


@app.route(route="health", methods=["GET", "OPTIONS"])
def gateway_health(req: func.HttpRequest) -> func.HttpResponse:
    return _http(routes.health, req)


# --- HTTP: phone calls over SIP ---------------------------------------------------------
# The service's signed realtime.call.incoming webhook (docs/phone.md); anonymous at the
# Functions level, verified by its signature inside (404 while SIP_WEBHOOK_SECRET is unset).
@app.route(route="sip/incoming", methods=["POST"])
@app.queue_output(arg_name="listener", queue_name="%LISTENER_QUEUE%", connection="AzureWebJobsStorage")
def sip_incoming(req: func.HttpRequest, listener: func.Out[str]) -> func.HttpResponse:
    return _http(sip.sip_incoming, req, enqueue=listener.set)


# --- Queue: the sideband listener --------------------------------------------------------
# One invocation per call for the whole call (up to LISTENER_TIME_BOX_SECONDS), async so that it
# holds a thread of the listeners' own pool (services.py), not of the worker's, which
# PYTHON_THREADPOOL_THREAD_COUNT caps at 32 (services.py); batchSize + newBatchThreshold in host.json
# bound how many run at once (docs/listener.md). The handover output binding carries the time-box continuation;
# the poison one takes malformed messages at once instead of after maxDequeueCount failed tries.
@app.queue_trigger(arg_name="msg", queue_name="%LISTENER_QUEUE%", connection="AzureWebJobsStorage")
@app.queue_output(arg_name="handover", queue_name="%LISTENER_QUEUE%", connection="AzureWebJobsStorage")
@app.queue_output(arg_name="poison", queue_name="%LISTENER_QUEUE%-poison", connection="AzureWebJobsStorage")
async def call_listener(msg: func.QueueMessage, handover: func.Out[str], poison: func.Out[str]) -> None:
    services = get_services()  # a bad setting raises here: the host retries, then poisons
    await services.in_listener_thread(
        handle_call_message,
        msg.get_body(),
        services=services,
        send_handover=handover.set,
        send_poison=poison.set,
        dequeue_count=getattr(msg, "dequeue_count", None),
    )


# --- HTTP: the read-only audit API -------------------------------------------------------
# Function auth level: every request needs a function key (one per auditor, revocable); the routes
# answer 404 unless AUDIT_API_ENABLED=true. Logic in realtime_gateway/audit/api.py.
@app.route(route="audit/sessions", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def audit_sessions(req: func.HttpRequest) -> func.HttpResponse:
    return _http(audit_api.sessions, req)


@app.route(route="audit/sessions/{call_id}", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def audit_session(req: func.HttpRequest) -> func.HttpResponse:
    return _http(audit_api.session, req, call_id=req.route_params["call_id"])


@app.route(route="audit/sessions/{call_id}/verify", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def audit_verify(req: func.HttpRequest) -> func.HttpResponse:
    return _http(audit_api.verify, req, call_id=req.route_params["call_id"])


@app.route(route="audit/sessions/{call_id}/transcript", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def audit_transcript(req: func.HttpRequest) -> func.HttpResponse:
    return _http(audit_api.call_transcript, req, call_id=req.route_params["call_id"])


# --- Timer: archive retention ------------------------------------------------------------
# Hourly at :30; deletes whole calls older than ARCHIVE_RETENTION_DAYS (0 = keep forever), each run
# for up to 4 minutes, so a backlog of any size is caught up run by run.
# Run it by hand with POST /admin/functions/archive_retention and the master key.
@app.timer_trigger(schedule="0 30 * * * *", arg_name="timer", run_on_startup=False)
def archive_retention(timer: func.TimerRequest) -> None:
    services = get_services()
    purge(services.archive, services.settings.archive_retention_days)


# --- Timer: free the active-call slots of ended calls ------------------------------------
# At start-up and every minute: a host stopped between a call's end and its slot's release (a
# deploy, a scale-in, Ctrl-C) would otherwise hold that slot until the call's deadline.
@app.timer_trigger(schedule="0 * * * * *", arg_name="timer", run_on_startup=True)
def slot_reconcile(timer: func.TimerRequest) -> None:
    get_services().free_ended_slots()
