"""A fixture Functions app (not the gateway) for the local host's tests.

Queue names come from app settings (`%NAME%`) so each test uses its own queues; handlers append
what they saw to the JSON-lines file named by RECORD_FILE.
"""

import asyncio
import json
import os
import time

import azure.functions as func

app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)


def record(**fields) -> None:
    with open(os.environ["RECORD_FILE"], "a", encoding="utf-8") as f:
        f.write(json.dumps(fields) + "\n")


@app.queue_trigger(arg_name="msg", queue_name="%FAIL_QUEUE%", connection="AzureWebJobsStorage")
def always_fails(msg: func.QueueMessage) -> None:
    record(
        fn="always_fails",
        id=msg.id,
        body=msg.get_body().decode(),
        dequeue_count=msg.dequeue_count,
        insertion_time=msg.insertion_time.isoformat() if msg.insertion_time else None,
        pop_receipt=bool(msg.pop_receipt),
    )
    raise RuntimeError("this handler always fails")


@app.queue_trigger(arg_name="msg", queue_name="%RELAY_QUEUE%", connection="AzureWebJobsStorage")
@app.queue_output(arg_name="out", queue_name="%OUT_QUEUE%", connection="AzureWebJobsStorage")
async def relay(msg: func.QueueMessage, out: func.Out[str]) -> None:
    record(fn="relay", body=msg.get_body().decode(), dequeue_count=msg.dequeue_count)
    out.set("relayed:" + msg.get_body().decode())


@app.queue_trigger(arg_name="msg", queue_name="%SLOW_QUEUE%", connection="AzureWebJobsStorage")
def slow(msg: func.QueueMessage) -> None:
    record(fn="slow", event="start", id=msg.id, t=time.time())
    time.sleep(float(os.environ.get("SLOW_SECONDS", "3")))
    record(fn="slow", event="end", id=msg.id, t=time.time())


@app.route(route="hello/{name}", methods=["GET"])
def hello(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse(
        json.dumps(
            {
                "name": req.route_params["name"],
                "q": req.params.get("q"),
                "method": req.method,
                "url": req.url,
                "agent": req.headers.get("x-test"),
            }
        ),
        mimetype="application/json",
    )


@app.route(route="items/{id:int}/{tag?}", methods=["GET", "PUT"], auth_level=func.AuthLevel.FUNCTION)
async def items(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse(
        json.dumps(
            {
                "id": req.route_params["id"],
                "tag": req.route_params.get("tag"),
                "method": req.method,
                "body": req.get_body().decode(),
            }
        ),
        status_code=201 if req.method == "PUT" else 200,
        headers={"x-item": req.route_params["id"]},
        mimetype="application/json",
    )


@app.route(route="admin-only", auth_level=func.AuthLevel.ADMIN)
def admin_only(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse("admin ok")


@app.route(route="emit", methods=["POST"])
@app.queue_output(arg_name="out", queue_name="%OUT_QUEUE%", connection="AzureWebJobsStorage")
def emit(req: func.HttpRequest, out: func.Out[str]) -> func.HttpResponse:
    items = req.get_json()
    out.set(items if isinstance(items, list) else str(items))
    return func.HttpResponse(status_code=202)


@app.route(route="sleep/{mode}")
async def sleepy(req: func.HttpRequest) -> func.HttpResponse:
    seconds = float(req.params.get("s", "30"))
    if req.route_params["mode"] == "async":
        await asyncio.sleep(seconds)
    else:
        await asyncio.get_running_loop().run_in_executor(None, time.sleep, seconds)
    return func.HttpResponse("woke up")


@app.route(route="sync-sleep")
def sync_sleep(req: func.HttpRequest) -> func.HttpResponse:
    time.sleep(float(req.params.get("s", "30")))
    return func.HttpResponse("woke up")


@app.route(route="boom")
def boom(req: func.HttpRequest) -> func.HttpResponse:
    raise ValueError("boom")


@app.timer_trigger(schedule="%TICK_SCHEDULE%", arg_name="timer", run_on_startup=True)
def tick(timer: func.TimerRequest) -> None:
    record(fn="tick", past_due=timer.past_due, at=time.time(), next=timer.schedule_status.get("Next"))
