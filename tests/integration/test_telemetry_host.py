"""Telemetry through the local host: the app in its own process exports OTLP to a receiver this test
runs on loopback, so what is checked is what an exporter really sends: one trace per call from
`/api/connect` through the queue to the listener and the archive writer, metrics that count what
happened, log records with the call's trace id, an upstream failure as an error span, and no
secret the emulator issued anywhere in the exported bytes."""

from __future__ import annotations

import time

import requests

from local.testing.offer import OfferPeer
from local.testing.otlp_sink import OtlpSink

ORIGIN = "https://app.example.com"
FAST_EXPORT = {  # the SDK's own knobs: export within a fraction of a second, not 5 s / 60 s
    "OTEL_BSP_SCHEDULE_DELAY": "100",
    "OTEL_BLRP_SCHEDULE_DELAY": "100",
    "OTEL_METRIC_EXPORT_INTERVAL": "300",
    "OTEL_TRACE_SUMMARY": "true",  # and the local stack's one line per call, beside the exporter
}


def _wait(pred, timeout=30.0, what="condition"):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        got = pred()
        if got:
            return got
        time.sleep(0.1)
    raise AssertionError(f"{what} not met within {timeout} s")


def _sum(points, **attrs):
    return sum(
        float(p.get("asInt") or p.get("asDouble") or p.get("count") or 0)
        for p in points
        if all(p["attributes"].get(k) == v for k, v in attrs.items())
    )


def test_one_call_is_one_trace_from_connect_to_the_archive(gateway_stack_factory, emulator):
    with OtlpSink() as sink, OfferPeer() as peer:
        offer = peer.offer
        # pool off: every connect mints inline, so the failing mint below is the step that fails
        stack = gateway_stack_factory(
            origins=(ORIGIN,), OTEL_EXPORTER_OTLP_ENDPOINT=sink.url, SECRET_POOL_SIZE="0", **FAST_EXPORT
        )
        # the first sideband drops after a few frames: the listener reconnects, the gap is archived
        emulator.set_fault("sideband", drop_after=3, times=1)
        sidebands = emulator.stats().get("sideband_connections", 0)
        headers = {"Content-Type": "application/sdp", "Origin": ORIGIN, "x-request-id": "req-telemetry-1"}
        r = requests.post(f"{stack.url}/api/connect", data=offer, headers=headers, timeout=30)
        assert r.status_code == 201, r.text
        call_id = r.headers["x-call-id"]
        peer.accept(r.text, wait_open=15)  # a connected call: the scripted replies play their audio

        _wait(lambda: emulator.stats()["sideband_connections"] > sidebands, what="the listener attached")
        script = f"{emulator.url}/_emulator/calls/{call_id}/script"
        assert requests.post(script, json={"responses": 1}, timeout=60).status_code == 200  # drops the socket
        _wait(lambda: emulator.stats()["sideband_connections"] >= sidebands + 2, what="the listener reconnected")
        assert requests.post(script, json={"responses": 2}, timeout=60).status_code == 200  # two whole turns
        time.sleep(0.5)  # the listener reads them before the hang-up closes the socket
        assert requests.post(f"{stack.url}/api/calls/{call_id}/hangup", timeout=30).status_code == 200

        # a failing upstream step: the secret's mint answered 400 (not retried)
        emulator.set_fault("client_secrets", status=400, times=1)
        bad = requests.post(f"{stack.url}/api/connect", data=offer, headers={**headers, "x-request-id": "req-fails-1"})
        assert bad.status_code == 502 and bad.json()["error"]["code"] == "upstream_error"

        def listener_span():
            return [s for s in sink.spans() if s["name"] == "listener" and s["attributes"].get("call_id") == call_id]

        _wait(listener_span, what="the listener's span exported")
        status = requests.get(f"{stack.url}/api/calls/{call_id}", timeout=10).json()
        _wait(
            lambda: _sum(sink.metrics().get("gateway.calls.refused", []), reason="upstream_error") >= 1,
            what="the refusal counted",
        )
        time.sleep(0.7)  # one more metric export: totals after the listener's last flush
        spans = sink.spans()
        metrics = sink.metrics()
        logs = sink.logs()
        raw = list(sink.raw)

    (listener,) = listener_span()
    trace_id = listener["trace_id"]
    in_trace = [s for s in spans if s["trace_id"] == trace_id]
    (connect,) = [s for s in in_trace if s["name"] == "connect"]
    # the listener, in another invocation of the host, is a child of /connect: one trace
    assert listener["parent"] == connect["span_id"]
    steps = {s["name"] for s in in_trace if s["parent"] == connect["span_id"]}
    assert {"limiter", "secret", "sdp", "enqueue", "listener"} <= steps
    flushes = [s for s in in_trace if s["name"] == "archive.flush"]
    assert flushes and all(f["parent"] == listener["span_id"] for f in flushes)
    assert connect["attributes"]["call_id"] == call_id
    assert connect["attributes"]["request_id"] == "req-telemetry-1"
    assert connect["attributes"]["origin"] == ORIGIN
    assert listener["attributes"]["request_id"] == "req-telemetry-1"
    assert listener["attributes"]["origin"] == ORIGIN
    assert listener["attributes"]["outcome"] == "ended" and listener["attributes"]["attach_delay_ms"] >= 0
    assert (connect["kind"], listener["kind"]) == ("SPAN_KIND_SERVER", "SPAN_KIND_CONSUMER")
    assert listener["attributes"]["end_reason"] == status["end_reason"] and status["state"] == "ended"
    events = [name for name, _ in listener["events"]]
    assert events[0] == "attached" and "reconnected" in events and "listener.gap" in events
    archived = sum(f["attributes"]["events"] for f in flushes)
    # every archived row group: the service's events and the listener's marks (here the one gap)
    assert listener["attributes"]["gaps"] == 1
    assert archived == listener["attributes"]["events"] + 1 > 10

    # the failing connect: its own trace, the failing step and the connect span marked with the code
    failed = [s for s in spans if s["attributes"].get("request_id") == "req-fails-1"]
    (failed_connect,) = failed
    failed_steps = [s for s in spans if s["parent"] == failed_connect["span_id"]]
    assert [s["name"] for s in failed_steps] == ["limiter", "secret"]  # the limiter let it through
    assert failed_steps[0]["status"].get("code") != "STATUS_CODE_ERROR"
    for sp in (failed_connect, failed_steps[1]):
        assert sp["status"].get("code") == "STATUS_CODE_ERROR" and sp["status"].get("message") == "upstream_error"
        assert sp["attributes"]["error.code"] == "upstream_error"

    # metrics count what happened
    assert _sum(metrics["gateway.calls.started"]) == 1
    assert _sum(metrics["gateway.calls.refused"], reason="upstream_error") == 1
    assert _sum(metrics["listener.calls.active"]) == 0
    assert _sum(metrics["listener.attach_delay"]) == 1
    assert _sum(metrics["listener.reconnects"]) == 1
    assert _sum(metrics["listener.gaps"]) == 1
    assert _sum(metrics["archive.events"]) == archived
    assert _sum(metrics["archive.write_latency"]) >= len(flushes)
    assert _sum(metrics["call.turn.first_audio"]) >= 2  # the two after the reconnect (the first: gap-dependent)
    assert _sum(metrics["call.tokens"], kind="output_text") > 0

    # log lines carry the trace: the gateway's and the listener's lines for this call
    call_logs = [rec for rec in logs if call_id in str(rec["body"]) and "hangup rid=" not in str(rec["body"])]
    assert any("connect rid=" in str(rec["body"]) for rec in call_logs)
    assert any("sideband dropped" in str(rec["body"]) for rec in call_logs)
    assert any("listener 0 done" in str(rec["body"]) for rec in call_logs)
    for rec in call_logs:  # all but the hang-up route's line: a request of its own, in its own trace
        assert rec["trace_id"] == trace_id, rec

    # the local stack's summary: one line for the call, one for the failed connect
    summary = [line for line in stack.logs.splitlines() if line.startswith(f"trace {trace_id} call {call_id}: connect")]
    print("\n".join(line for line in stack.logs.splitlines() if line.startswith("trace ")))
    assert (
        len(summary) == 1 and "(limiter " in summary[0] and ", secret " in summary[0] and "listener#0 " in summary[0]
    ), stack.logs[-3000:]
    assert f"{archived} events in {len(flushes)} flushes" in summary[0] and ", 1 reconnects, 1 gaps" in summary[0]
    assert any(
        "connect" in line and "ERROR upstream_error (limiter" in line and "secret" in line
        for line in stack.logs.splitlines()
    )

    # nothing any exporter sent holds a secret issued in this run
    creds = emulator.state.creds
    issued = [*creds._tokens, *creds._keys, emulator.identity_header]
    assert len(creds._keys) >= 1 and len(creds._tokens) >= 1
    for body in raw:
        for secret in issued:
            assert secret.encode() not in body
