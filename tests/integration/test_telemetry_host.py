"""Telemetry through the local host: the app in its own process exports OTLP to a receiver this test
runs on loopback, so what is checked is what an exporter really sends: one trace per call from
`/api/connect` through the queue to both listeners of a time-box hand-over and the archive writer,
metrics that count what happened, log records with the call's trace id, an upstream failure as an
error span, and no secret the emulator issued, no SDP and no transcript anywhere in the exported bytes."""

from __future__ import annotations

import base64
import json
import time

import requests

from local.testing.offer import OfferPeer
from local.testing.otlp_sink import OtlpSink
from realtime_gateway.archive.store import Archive
from realtime_gateway.archive.tables import table_service_from_env

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


PRINCIPAL = {  # Static Web Apps' x-ms-client-principal
    "userId": "u-telemetry-7",
    "userDetails": "ada.lovelace@example.com",
    "identityProvider": "aad",
    "userRoles": ["anonymous", "authenticated"],
}
TOPIC = "the quartz-lantern renewal"  # in every user and assistant turn: transcript no exporter may send


def _sdp_lines(sdp: str) -> list[bytes]:
    """What identifies an SDP body: its first line and its per-peer credentials and fingerprint."""
    lines = [line for line in sdp.splitlines() if line.startswith(("a=fingerprint:", "a=ice-ufrag:", "a=ice-pwd:"))]
    assert sdp.startswith("v=0\r\no=") and len(lines) >= 3, sdp
    return [b"v=0\r\no=", *(line.encode() for line in lines)]


def _archive(stack) -> Archive:
    return Archive(
        table_service_from_env({"AzureWebJobsStorage": stack.azurite.connection_string}),
        stack.settings["ARCHIVE_EVENTS_TABLE"],
        stack.settings["ARCHIVE_SESSIONS_TABLE"],
    )


def _transcripts(stack, call_id: str) -> list[str]:
    """Every transcript and text of the call's archived events (the user's turns too), and the
    session row's transcripts."""
    archive = _archive(stack)
    session = archive.find_session(call_id) or {}
    found = [session[k] for k in ("user_transcript", "assistant_transcript") if session.get(k)]

    def walk(value):
        if isinstance(value, dict):
            for key, item in value.items():
                if key in ("transcript", "text") and isinstance(item, str) and len(item) >= 12:
                    found.append(item)
                else:
                    walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    for rec in archive.read_events(call_id):
        walk(json.loads(rec.payload))
    return found


def test_one_call_is_one_trace_from_connect_through_a_hand_over_to_the_archive(gateway_stack_factory, emulator):
    with OtlpSink() as sink, OfferPeer() as peer:
        offer = peer.offer
        # pool off: every connect mints inline, so the failing mint below is the step that fails;
        # the shortest time box: the first listener hands over to a second one mid-call
        stack = gateway_stack_factory(
            WEBSITE_AUTH_ENABLED="true",  # as App Service authentication sets it: the principal is the platform's
            origins=(ORIGIN,),
            OTEL_EXPORTER_OTLP_ENDPOINT=sink.url,
            SECRET_POOL_SIZE="0",
            LISTENER_TIME_BOX_SECONDS="10",
            **FAST_EXPORT,
        )
        # the first sideband drops after a few frames: the listener reconnects, the gap is archived
        emulator.set_fault("sideband", drop_after=3, times=1)
        sidebands = emulator.stats().get("sideband_connections", 0)
        headers = {
            "Content-Type": "application/sdp",
            "Origin": ORIGIN,
            "x-request-id": "req-telemetry-1",
            "x-ms-client-principal": base64.b64encode(json.dumps(PRINCIPAL).encode()).decode(),
        }
        r = requests.post(f"{stack.url}/api/connect", data=offer, headers=headers, timeout=30)
        assert r.status_code == 201, r.text
        call_id, answer = r.headers["x-call-id"], r.text
        capability = {"x-call-capability": r.headers["x-call-capability"]}
        peer.accept(answer, wait_open=15)  # a connected call: the scripted replies play their audio

        def say(n: int) -> None:
            turns = requests.post(
                f"{emulator.url}/_emulator/calls/{call_id}/script",
                json={"responses": n, "text": f"Tell me about {TOPIC}, please"},
                timeout=60,
            )
            assert turns.status_code == 200

        def listener_spans():
            return [s for s in sink.spans() if s["name"] == "listener" and s["attributes"].get("call_id") == call_id]

        _wait(lambda: emulator.stats()["sideband_connections"] > sidebands, what="the listener attached")
        say(1)  # drops the socket
        _wait(lambda: emulator.stats()["sideband_connections"] >= sidebands + 2, what="the listener reconnected")
        say(2)  # two whole turns
        # the 10 s time box runs out: the continuation comes back through the queue to listener 1
        _wait(listener_spans, timeout=60, what="the first listener's span (handed over) exported")
        _wait(lambda: emulator.stats()["sideband_connections"] >= sidebands + 3, what="listener 1 attached")
        # the listener reads (and archives) the last turn before the hang-up closes the socket
        archive = _archive(stack)

        def turns_archived() -> int:
            return sum(e.event_type == "response.done" for e in archive.read_events(call_id))

        before = turns_archived()
        say(1)
        _wait(lambda: turns_archived() > before, what="the last turn archived")
        assert (
            requests.post(f"{stack.url}/api/calls/{call_id}/hangup", headers=capability, timeout=30).status_code == 200
        )

        # a failing upstream step: the secret's mint answered 400 (not retried)
        emulator.set_fault("client_secrets", status=400, times=1)
        fails = {**headers, "x-request-id": "req-fails-1"}
        bad = requests.post(f"{stack.url}/api/connect", data=offer, headers=fails, timeout=30)
        assert bad.status_code == 502 and bad.json()["error"]["code"] == "upstream_error"

        _wait(lambda: len(listener_spans()) == 2, what="the second listener's span exported")
        status = requests.get(f"{stack.url}/api/calls/{call_id}", timeout=10).json()
        _wait(
            lambda: _sum(sink.metrics().get("gateway.calls.refused", []), reason="upstream_error") >= 1,
            what="the refusal counted",
        )

        def metrics_caught_up() -> bool:
            """The last metric export counts every row the listeners' flushes wrote, and no call active."""
            trace_id = listener_spans()[0]["trace_id"]
            flushed = sum(
                sp["attributes"]["events"]
                for sp in sink.spans()
                if sp["name"] == "archive.flush" and sp["trace_id"] == trace_id
            )
            exported = sink.metrics()
            return (
                _sum(exported.get("archive.events", [])) == flushed
                and _sum(exported.get("listener.calls.active", [])) == 0
            )

        _wait(metrics_caught_up, what="the metrics exported after the listener's last flush")
        spans = sink.spans()
        metrics = sink.metrics()
        logs = sink.logs()
        raw = list(sink.raw)
        transcripts = _transcripts(stack, call_id)

    first, second = sorted(listener_spans(), key=lambda s: s["attributes"]["continuation"])
    trace_id = first["trace_id"]
    in_trace = [s for s in spans if s["trace_id"] == trace_id]
    (connect,) = [s for s in in_trace if s["name"] == "connect"]
    # both listeners, each in its own invocation of the host, are children of /connect: one trace
    assert first["parent"] == second["parent"] == connect["span_id"] and second["trace_id"] == trace_id
    steps = {s["name"] for s in in_trace if s["parent"] == connect["span_id"]}
    assert {"limiter", "secret", "sdp", "enqueue", "listener"} <= steps
    (secret,) = [s for s in in_trace if s["name"] == "secret"]
    assert secret["attributes"]["source"] == "minted"
    flushes = {
        lst["span_id"]: [s for s in in_trace if s["name"] == "archive.flush" and s["parent"] == lst["span_id"]]
        for lst in (first, second)
    }
    assert all(flushes.values())
    assert sum(map(len, flushes.values())) == len([s for s in in_trace if s["name"] == "archive.flush"])
    assert connect["attributes"]["call_id"] == call_id
    assert connect["attributes"]["request_id"] == "req-telemetry-1"
    assert connect["attributes"]["origin"] == ORIGIN
    assert connect["attributes"]["principal_id"] == PRINCIPAL["userId"]
    for lst in (first, second):
        assert lst["attributes"]["request_id"] == "req-telemetry-1"
        assert lst["attributes"]["origin"] == ORIGIN
        assert lst["attributes"]["principal_id"] == PRINCIPAL["userId"]
        assert lst["kind"] == "SPAN_KIND_CONSUMER"
    assert connect["kind"] == "SPAN_KIND_SERVER"
    assert (first["attributes"]["outcome"], first["attributes"]["end_reason"]) == ("handed_over", "time_box")
    assert first["attributes"]["attach_delay_ms"] >= 0 and "attach_delay_ms" not in second["attributes"]
    assert second["attributes"]["outcome"] == "ended"
    assert second["attributes"]["end_reason"] == status["end_reason"] and status["state"] == "ended"
    events = [name for name, _ in first["events"]]
    assert events[0] == "attached" and "reconnected" in events and events[-1] == "listener.handover"
    (dropped,) = [attrs for name, attrs in first["events"] if name == "listener.gap"]
    assert set(dropped) == {"reason", "seconds", "attempts"} and dropped["reason"] == "socket dropped"
    assert [(name, attrs) for name, attrs in second["events"] if name == "listener.gap"] == [
        ("listener.gap", {"reason": "handover", "continuation": 1})
    ]
    archived = {key: sum(f["attributes"]["events"] for f in fs) for key, fs in flushes.items()}
    # every archived row group: the service's events and the listener's marks (gap, hand-over; gap)
    assert archived[first["span_id"]] > 10 and archived[second["span_id"]] > 3
    assert second["attributes"]["gaps"] == 2
    assert sum(archived.values()) == second["attributes"]["events"] + 3

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
    assert _sum(metrics["listener.attach_delay"]) == 1  # the first listener's attach only
    assert _sum(metrics["listener.reconnects"]) == 1
    assert _sum(metrics["listener.handovers"]) == 1
    assert _sum(metrics["listener.gaps"], reason="socket dropped") == 1
    assert _sum(metrics["listener.gaps"], reason="handover") == 1
    assert _sum(metrics["archive.events"]) == sum(archived.values())
    assert _sum(metrics["archive.write_latency"]) >= sum(map(len, flushes.values()))
    assert _sum(metrics["call.turn.first_audio"]) >= 3  # those after the reconnect (the first: gap-dependent)
    assert _sum(metrics["call.tokens"], kind="output_text") > 0

    # log lines carry the trace: the gateway's and both listeners' lines for this call
    call_logs = [rec for rec in logs if call_id in str(rec["body"]) and "hangup rid=" not in str(rec["body"])]
    assert any("connect rid=" in str(rec["body"]) for rec in call_logs)
    assert any("sideband dropped" in str(rec["body"]) for rec in call_logs)
    assert any("handed over to listener 1" in str(rec["body"]) for rec in call_logs)
    assert any("listener 0 done" in str(rec["body"]) for rec in call_logs)
    assert any("listener 1 done" in str(rec["body"]) for rec in call_logs)
    for rec in call_logs:  # all but the hang-up route's line: a request of its own, in its own trace
        assert rec["trace_id"] == trace_id, rec

    # the local stack's summary: one line for the call (both listeners), one for the failed connect
    summary = [line for line in stack.logs.splitlines() if line.startswith(f"trace {trace_id} call {call_id}: connect")]
    print("\n".join(line for line in stack.logs.splitlines() if line.startswith("trace ")))
    assert len(summary) == 1 and "(limiter " in summary[0] and ", secret " in summary[0], stack.logs[-3000:]
    listener_parts = summary[0].split(" -> ")[1:]
    assert [part.split(" ", 1)[0] for part in listener_parts] == ["listener#0", "listener#1"], summary[0]
    for lst, part in zip((first, second), listener_parts, strict=True):
        assert f"{archived[lst['span_id']]} events in {len(flushes[lst['span_id']])} flushes" in part
    assert ", 1 reconnects, 1 gaps" in listener_parts[0] and "handed_over: time_box" in listener_parts[0]
    assert ", 1 gaps" in listener_parts[1] and listener_parts[1].endswith(f"ended: {status['end_reason']}")
    assert any(
        "connect" in line and "ERROR upstream_error (limiter" in line and "secret" in line
        for line in stack.logs.splitlines()
    )

    # nothing any exporter sent holds a secret issued in this run, the SDP of either side, or what was said
    creds = emulator.state.creds
    issued = [*creds._tokens, *creds._keys, emulator.identity_header]
    assert len(creds._keys) >= 1 and len(creds._tokens) >= 1
    said = [TOPIC, *transcripts, PRINCIPAL["userDetails"]]  # the principal is its id only
    assert len(transcripts) >= 8 and sum(TOPIC in text for text in transcripts) >= 8
    forbidden = [*(s.encode() for s in issued), *_sdp_lines(offer), *_sdp_lines(answer), *(t.encode() for t in said)]
    assert raw and any(call_id.encode() in body for body in raw)  # the scan reads what was exported
    for body in raw:
        for text in forbidden:
            assert text not in body, text
