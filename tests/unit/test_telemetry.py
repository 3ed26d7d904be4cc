"""Telemetry helpers with the SDK's in-memory exporters (the whole path through the local host is in
tests/integration/test_telemetry_host.py): span errors and codes, the queue's trace context, metrics,
redaction of exported logs, the per-call summary, settings, and the off path's import cost."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys

import pytest
from opentelemetry.instrumentation.logging.handler import LoggingHandler
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from realtime_gateway import redact, telemetry
from realtime_gateway.errors import ApiError
from realtime_gateway.gateway.http import Request, Response
from realtime_gateway.listener.message import CallMessage
from realtime_gateway.settings import SettingsError, telemetry_settings
from realtime_gateway.trace_summary import CallSummaryProcessor

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SECRET = "ek_" + "7f" * 24


class Otel:
    def __init__(self) -> None:
        self.spans = InMemorySpanExporter()
        self.reader = InMemoryMetricReader()
        self.logs = InMemoryLogRecordExporter()
        self.summary = io.StringIO()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.spans))
        self.tracer_provider.add_span_processor(CallSummaryProcessor(self.summary))
        self.logger_provider = LoggerProvider()
        self.logger_provider.add_log_record_processor(SimpleLogRecordProcessor(self.logs))
        self.handler = LoggingHandler(level=logging.INFO, logger_provider=self.logger_provider)

    def metric(self, name: str) -> list:
        data = self.reader.get_metrics_data()
        return [
            p
            for rm in (data.resource_metrics if data else [])
            for sm in rm.scope_metrics
            for m in sm.metrics
            if m.name == name
            for p in m.data.data_points
        ]

    def total(self, name: str, **attrs) -> float:
        points = [p for p in self.metric(name) if all(p.attributes.get(k) == v for k, v in attrs.items())]
        return sum(getattr(p, "value", None) if hasattr(p, "value") else p.count for p in points)

    def by_name(self, name: str):
        return [s for s in self.spans.get_finished_spans() if s.name == name]


@pytest.fixture
def otel():
    o = Otel()
    redact.install_record_factory()
    telemetry.use(o.tracer_provider, MeterProvider(metric_readers=[o.reader]))
    logger = logging.getLogger("realtime_gateway")
    level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(o.handler)
    telemetry._redact_exported_logs(logger)
    yield o
    logger.removeHandler(o.handler)
    logger.setLevel(level)
    telemetry.use(None, None)


def route_with_steps(fail_at: str | None):
    @telemetry.traced("connect")
    def connect(p, req, rid):
        for step in ("secret", "sdp"):
            with telemetry.span(step):
                if step == fail_at:
                    raise ApiError(502, "upstream_error", "Azure OpenAI answered with status 500")
        telemetry.annotate(call_id="rtc_abc")
        return Response(201)

    return connect


def test_a_failing_step_marks_its_span_and_connect_with_the_code_and_counts_a_refusal(otel):
    req = Request("POST", "http://h/api/connect", {"Origin": "https://app.example"})
    with pytest.raises(ApiError):
        route_with_steps("sdp")(None, req, "rid-1")
    assert route_with_steps(None)(None, req, "rid-2").status == 201
    (failed_sdp, ok_sdp) = otel.by_name("sdp")
    (failed, ok) = otel.by_name("connect")
    for sp in (failed_sdp, failed):
        assert sp.status.status_code is StatusCode.ERROR and sp.status.description == "upstream_error"
        assert sp.attributes["error.code"] == "upstream_error"
        assert sp.attributes["http.response.status_code"] == 502
    assert failed.attributes["request_id"] == "rid-1" and failed.attributes["origin"] == "https://app.example"
    assert ok.status.status_code is StatusCode.UNSET and ok.attributes["call_id"] == "rtc_abc"
    assert failed_sdp.parent.span_id == failed.context.span_id
    assert otel.total(telemetry.CALLS_REFUSED, reason="upstream_error") == 1
    assert otel.total(telemetry.CALLS_STARTED) == 1
    assert "ERROR upstream_error (secret 0ms, sdp 0ms ERROR upstream_error)" in otel.summary.getvalue()


def test_the_queue_message_carries_the_trace_to_the_listener_span(otel):
    with telemetry.span("connect"):
        msg = CallMessage("rtc_1", 1.0, 2.0, origin="o", principal={"id": "p-1"}, traceparent=telemetry.traceparent())
    received = CallMessage.from_json(msg.to_json())
    with telemetry.listener_span(received, redelivered=False):
        assert otel.total(telemetry.CALLS_ACTIVE) == 1
        telemetry.annotate(outcome="ended", end_reason="hangup")
    (connect,) = otel.by_name("connect")
    (listener,) = otel.by_name("listener")
    assert listener.parent.span_id == connect.context.span_id
    assert listener.context.trace_id == connect.context.trace_id
    assert listener.attributes["principal_id"] == "p-1" and listener.attributes["call_id"] == "rtc_1"
    assert otel.total(telemetry.CALLS_ACTIVE) == 0
    assert f"trace {connect.context.trace_id:032x} call rtc_1: connect" in otel.summary.getvalue()


def test_old_messages_and_odd_traceparents_start_a_trace_of_their_own(otel):
    old = json.dumps({"v": 1, "call_id": "rtc_2", "started_at": 1.0, "deadline": 2.0})
    assert CallMessage.from_json(old).traceparent is None
    for tp in (None, "not-a-traceparent", 42):
        msg = CallMessage("rtc_2", 1.0, 2.0, traceparent=tp)  # type: ignore[arg-type]
        with telemetry.listener_span(msg, redelivered=True):
            pass
    assert all(s.parent is None for s in otel.by_name("listener"))


def test_turn_clock_times_first_audio_and_counts_tokens_by_kind(otel):
    clock = telemetry.TurnClock()
    usage = {
        "input_token_details": {"text_tokens": 3, "audio_tokens": 40, "cached_tokens": 2},
        "output_token_details": {"text_tokens": 5, "audio_tokens": 60},
    }
    frames = [
        ({"type": "input_audio_buffer.speech_stopped"}, 10.0),
        ({"type": "response.created"}, 10.1),
        ({"type": "output_audio_buffer.started"}, 10.35),
        ({"type": "response.done", "response": {"usage": usage}}, 11.0),
        ({"type": "response.created"}, 20.0),  # a turn the server started (text or tool)
        ({"type": "response.output_audio.delta"}, 20.2),
        ({"type": "conversation.item.added", "item": {"content": "speech_stopped"}}, 21.0),
    ]
    for event, at in frames:
        clock.see(event["type"], event, at)
    (hist,) = otel.metric(telemetry.FIRST_AUDIO)
    assert hist.count == 2 and hist.sum == pytest.approx(350 + 200)
    expected = {"input_text": 3, "input_audio": 40, "input_cached": 2, "output_text": 5, "output_audio": 60}
    for kind, value in expected.items():
        assert otel.total(telemetry.TOKENS, kind=kind) == value


def test_exported_logs_carry_the_trace_and_no_secret_even_in_a_traceback(otel):
    log = logging.getLogger("realtime_gateway.test")
    with telemetry.span("connect"):
        try:
            raise RuntimeError(f"upstream said Authorization: Bearer {SECRET}")
        except RuntimeError:
            log.exception("call rtc_3 failed with key %s", SECRET)
    (span,) = otel.by_name("connect")
    (readable,) = otel.logs.get_finished_logs()
    record = readable.log_record
    assert record.trace_id == span.context.trace_id and record.span_id == span.context.span_id
    exported = readable.to_json()
    assert SECRET not in exported and "[redacted]" in exported


def test_attributes_go_through_the_redactor(otel):
    with telemetry.span("secret", note=f"key {SECRET}"):
        telemetry.event("attached", detail=f"Bearer {SECRET}", skipped={"dicts": "are not attributes"})
    (span,) = otel.by_name("secret")
    assert SECRET not in span.to_json() and "skipped" not in span.to_json()


def test_telemetry_settings():
    assert telemetry_settings({}) == telemetry_settings({"OTEL_TRACE_SUMMARY": " "})
    ts = telemetry_settings(
        {
            "APPLICATIONINSIGHTS_CONNECTION_STRING": "InstrumentationKey=00000000-0000-0000-0000-000000000000;"
            "IngestionEndpoint=https://westeurope-5.in.applicationinsights.azure.com/",
            "APPLICATIONINSIGHTS_AUTHENTICATION_STRING": "ClientId=11111111-2222-3333-4444-555555555555;Authorization=AAD",
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318",
            "OTEL_TRACE_SUMMARY": "true",
        }
    )
    assert ts.aad_client_id == "11111111-2222-3333-4444-555555555555" and ts.summary and ts.otlp_endpoint
    assert telemetry_settings({"APPLICATIONINSIGHTS_AUTHENTICATION_STRING": "Authorization=AAD"}).aad_client_id == ""
    with pytest.raises(SettingsError) as err:
        telemetry_settings(
            {
                "APPLICATIONINSIGHTS_CONNECTION_STRING": "nonsense",
                "APPLICATIONINSIGHTS_AUTHENTICATION_STRING": "ClientId=x",
                "OTEL_EXPORTER_OTLP_ENDPOINT": "localhost:4318",
                "OTEL_TRACE_SUMMARY": "maybe",
            }
        )
    for name in ("CONNECTION_STRING", "AUTHENTICATION_STRING", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_TRACE_SUMMARY"):
        assert name in str(err.value)


PROBE = """
import sys, function_app
from realtime_gateway import telemetry
loaded = sorted({m.split(".")[0] for m in sys.modules if m.startswith(("opentelemetry", "azure.monitor"))})
print(telemetry.setup(), telemetry.enabled(), loaded)
"""


def _probe(**env: str) -> str:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "APPLICATIONINSIGHTS_"))}
    out = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=ROOT, env={**clean, **env}, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_off_imports_nothing_of_opentelemetry_and_a_bad_setting_leaves_it_off():
    assert _probe() == "off False []"
    assert _probe(OTEL_TRACE_SUMMARY="maybe") == "off False []"
    assert _probe(OTEL_TRACE_SUMMARY="true").startswith("on True ['opentelemetry']")


# ---- connect's secret step: a span whether pooled or minted -------------------------------------------
def test_the_secret_step_is_a_span_whether_pooled_or_minted_and_a_refused_pooled_one_is_retried(
    otel, emulator, monkeypatch
):
    from local.testing.offer import OfferPeer
    from realtime_gateway import process as process_state
    from tests.unit.test_secret_pool import connect, hangup, make_gateway, warm

    gw = make_gateway(emulator, monkeypatch, SECRET_POOL_SIZE="1")
    try:
        with OfferPeer() as peer:
            offer = peer.offer.encode()
        for fault in (None, None, "calls"):  # cold pool (minted), warm pool (pooled), a 401 on the SDP post
            if fault:
                emulator.set_fault(fault, status=401, times=1)
            resp = connect(offer)
            assert resp.status == 201, resp.body
            hangup(resp.headers["x-call-id"])
            warm(gw)
    finally:
        process_state.reset_process()
    spans = otel.spans.get_finished_spans()

    def steps(parent):
        kids = sorted((s for s in spans if s.parent and s.parent.span_id == parent.context.span_id), key=_start)
        return [(s.name, s.attributes.get("source"), s.status.description) for s in kids]

    cold, warm_, refused = sorted(otel.by_name("connect"), key=_start)
    assert steps(cold) == [("limiter", None, None), ("secret", "minted", None), ("sdp", None, None)]
    assert steps(warm_) == [("limiter", None, None), ("secret", "pooled", None), ("sdp", None, None)]
    assert steps(refused) == [
        ("limiter", None, None),
        ("secret", "pooled", None),
        ("sdp", None, "upstream_auth"),  # the pooled secret refused: no call started
        ("secret", "minted", None),
        ("sdp", None, None),
    ]
    (retried,) = [s for s in otel.by_name("secret") if s.attributes.get("retry")]
    assert retried.parent.span_id == refused.context.span_id
    assert all(not steps(s) for s in otel.by_name("secret"))  # the SDP post is connect's step, not the secret's


def _start(sp):
    return sp.start_time


# ---- listener marks: allowlisted fields only, on the listener's span -----------------------------------
ARGUMENT_TEXT = "my card number is 4111 1111 1111 1111"
RESULT_TEXT = "Dear Ada, your balance is 1234.56"
SPOKEN = "Sure, the forbidden xylophone tune goes like this"
NOTICE = "Stopped: that broke the policy."


def test_tool_and_guardrail_marks_are_events_on_the_listener_span_without_their_texts(otel):
    import re
    import threading

    from realtime_gateway.listener.control import Control
    from realtime_gateway.listener.guardrails import Guardrail
    from realtime_gateway.listener.tools import ToolBox

    tools = ToolBox(
        {"lookup": {"type": "object", "properties": {"query": {"type": "string"}}}},
        {"lookup": lambda query: {"answer": RESULT_TEXT}},
        timeout=5,
    )
    guardrail = Guardrail([re.compile(r"\bxylophone\b", re.IGNORECASE)], None, NOTICE, max_hits=0)
    archived: list[tuple[str, dict, str]] = []
    sent: list[dict] = []

    def mark(kind, payload):  # what ArchiveWriter.mark does: archive it all, then telemetry.mark
        archived.append((kind, payload, threading.current_thread().name))
        telemetry.mark(kind, payload)

    def function_call(call_id, name):
        item = {"type": "function_call", "status": "completed", "call_id": call_id, "name": name}
        item["arguments"] = json.dumps({"query": ARGUMENT_TEXT})
        return json.dumps({"type": "response.output_item.done", "response_id": "resp_1", "item": item})

    with telemetry.listener_span(CallMessage("rtc_tools", 1.0, 2.0, principal={"id": "p-9"}), redelivered=False):
        control = Control(tools, guardrail, sent.append, mark, lambda why: None)
        control.on_event(function_call("call_1", "lookup"))
        control.on_event(function_call("call_2", "tell_me_4111111111111111"))  # a name nobody declared
        control.on_event(json.dumps({"type": "response.done", "response": {"id": "resp_1"}}))
        delta = {"type": "response.output_audio_transcript.delta", "response_id": "resp_2", "item_id": "it_2"}
        control.on_event(json.dumps({**delta, "delta": SPOKEN}))
        control.close(10)
    # the archive got the whole story, from the control pool's threads (no span of their own) ...
    assert sorted(kind for kind, _, _ in archived) == ["listener.guardrail", "listener.tool", "listener.tool"]
    assert all(thread.startswith("call-control") for _, _, thread in archived)
    archived_text = json.dumps(archived)
    for text in (ARGUMENT_TEXT, RESULT_TEXT, "xylophone", NOTICE):
        assert text in archived_text, text
    assert [m["type"] for m in sent].count("response.cancel") == 1
    # ... and the listener's span an event per mark, with the allowlisted fields only
    (listener,) = otel.spans.get_finished_spans()
    assert listener.name == "listener"
    events = {(e.name, e.attributes.get("ok")): dict(e.attributes) for e in listener.events}
    assert set(events) == {("listener.tool", True), ("listener.tool", False), ("listener.guardrail", None)}
    ok, failed = events[("listener.tool", True)], events[("listener.tool", False)]
    assert set(ok) == {"tool", "ok", "duration_ms", "sent"} and ok["tool"] == "lookup" and ok["sent"] is True
    assert isinstance(ok["duration_ms"], int)
    assert set(failed) == {"ok", "error_kind", "duration_ms", "sent"} and failed["error_kind"] == "unknown_tool"
    assert events[("listener.guardrail", None)] == {"action": "cancel", "hits": 1, "sent": True}
    exported = listener.to_json()
    for text in (ARGUMENT_TEXT, "4111", RESULT_TEXT, "Dear Ada", "xylophone", "forbidden", NOTICE, "it_2", "resp_"):
        assert text not in exported, text


def test_every_tool_failure_has_a_kind_a_span_may_carry():
    from realtime_gateway.listener.tools import ERROR_KINDS, ToolBox

    tools = ToolBox({"f": {"type": "object"}, "ghost": {}}, {"f": lambda: {1, 2}}, timeout=1)
    failures = [("f", "{"), ("f", "[1]"), ("f", "{}"), ("ghost", "{}"), ("nope", "{}")]
    kinds = []
    for name, args in failures:
        attrs = telemetry.mark_attributes("listener.tool", {**tools.run(name, "c", args).record(), "sent": True})
        kinds.append(attrs["error_kind"])
        assert ("tool" in attrs) == (name != "nope")  # a declared tool's name only
    assert kinds == ["bad_json", "not_an_object", "not_encodable", "not_implemented", "unknown_tool"]
    assert all(telemetry._word(kind) for kind in ERROR_KINDS) and set(kinds) <= set(ERROR_KINDS)
    broken = ToolBox({"x": {}}, {}, timeout=1, load_error="the tools module could not be loaded (ImportError)")
    attrs = telemetry.mark_attributes("listener.tool", broken.run("x", "c", "{}").record())
    assert set(attrs) == {"ok", "error_kind", "duration_ms"} and attrs["error_kind"] == "module_error"


def test_gap_and_handover_marks_keep_reasons_and_counts_but_no_error_text(otel):
    with telemetry.listener_span(CallMessage("rtc_gap", 1.0, 2.0), redelivered=False):
        telemetry.mark(
            "listener.gap",
            {
                "reason": "socket dropped",
                "error": f"closed 1006: peer said {SPOKEN}",
                "from": "2025-01-01T00:00:00Z",
                "until": "2025-01-01T00:00:01Z",
                "seconds": 1.25,
                "attempts": 2,
            },
        )
        telemetry.mark("listener.gap", {"reason": SPOKEN, "continuation": 1})  # not a code's word: left out
        telemetry.mark("listener.handover", {"continuation": 1, "note": SPOKEN})
        telemetry.mark("listener.something_new", {"text": SPOKEN, "n": 3})  # an unknown mark carries nothing
    (listener,) = otel.by_name("listener")
    assert [(e.name, dict(e.attributes)) for e in listener.events] == [
        ("listener.gap", {"reason": "socket dropped", "seconds": 1.25, "attempts": 2}),
        ("listener.gap", {"continuation": 1}),
        ("listener.handover", {"continuation": 1}),
        ("listener.something_new", {}),
    ]
    assert "xylophone" not in listener.to_json() and "1006" not in listener.to_json()
    assert otel.total(telemetry.GAPS, reason="socket dropped") == 1 and otel.total(telemetry.GAPS) == 2
    assert otel.total(telemetry.HANDOVERS) == 1
