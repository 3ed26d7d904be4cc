"""The realtime gateway's Azure Functions app: every trigger and binding, each a thin handler.

The logic lives in `realtime_gateway/`; this file only says which route or queue calls what.
"""
import azure.functions as func

from realtime_gateway import http_api, listener_queue

app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)

# --- HTTP: the gateway -------------------------------------------------------------------
# Anonymous at the Functions level (a browser cannot keep a function key); guarded by the origin
# allowlist and the optional principal inside the handlers. OPTIONS is registered so preflight
# works the same on the local host and in Azure when siteConfig.cors is not used.

def _to_neutral(req: func.HttpRequest) -> http_api.Request:
    return http_api.Request(req.method, req.url, dict(req.headers), req.get_body() or b"",
                            dict(req.params), dict(req.route_params))


def _to_func(resp: http_api.Response) -> func.HttpResponse:
    return func.HttpResponse(resp.body, status_code=resp.status, headers=resp.headers,
                             mimetype=resp.mimetype)


@app.route(route="connect", methods=["POST", "OPTIONS"])
@app.queue_output(arg_name="listener", queue_name="%LISTENER_QUEUE%", connection="AzureWebJobsStorage")
def gateway_connect(req: func.HttpRequest, listener: func.Out[str]) -> func.HttpResponse:
    return _to_func(http_api.handle("connect", _to_neutral(req), enqueue=listener.set))


@app.route(route="token", methods=["GET", "OPTIONS"])
def gateway_token(req: func.HttpRequest) -> func.HttpResponse:
    return _to_func(http_api.handle("token", _to_neutral(req)))


@app.route(route="calls/{call_id}/hangup", methods=["POST", "OPTIONS"])
def gateway_hangup(req: func.HttpRequest) -> func.HttpResponse:
    return _to_func(http_api.handle("hangup", _to_neutral(req), call_id=req.route_params["call_id"]))


@app.route(route="health", methods=["GET", "OPTIONS"])
def gateway_health(req: func.HttpRequest) -> func.HttpResponse:
    return _to_func(http_api.handle("health", _to_neutral(req)))


# --- Queue: the sideband listener --------------------------------------------------------
# One invocation per call holds a worker thread for the whole call (up to LISTENER_TIME_BOX_SECONDS);
# batchSize/newBatchThreshold in host.json and PYTHON_THREADPOOL_THREAD_COUNT bound how many run at
# once (README: concurrency sizing). The handover output binding carries the time-box continuation;
# the poison one takes malformed messages at once instead of after maxDequeueCount failed tries.
@app.queue_trigger(arg_name="msg", queue_name="%LISTENER_QUEUE%", connection="AzureWebJobsStorage")
@app.queue_output(arg_name="handover", queue_name="%LISTENER_QUEUE%", connection="AzureWebJobsStorage")
@app.queue_output(arg_name="poison", queue_name="%LISTENER_QUEUE%-poison", connection="AzureWebJobsStorage")
def call_listener(msg: func.QueueMessage, handover: func.Out[str], poison: func.Out[str]) -> None:
    listener_queue.handle_call_message(
        msg.get_body(), send_handover=handover.set, send_poison=poison.set,
        dequeue_count=getattr(msg, "dequeue_count", None),
        queue_name=listener_queue.queue_name_from_env())


@app.route(route="calls/{call_id}", methods=["GET", "OPTIONS"])
def call_state(req: func.HttpRequest) -> func.HttpResponse:
    return _to_func(http_api.handle("call_state", _to_neutral(req), call_id=req.route_params["call_id"]))
