"""Telemetry helpers with the SDK's in-memory exporters (the `otel` fixture, tests/fixtures/otel.py; the
whole path through the local host is in tests/integration/test_telemetry_host.py): span errors and
codes, the queue's trace context, metrics, redaction of exported logs, the per-call summary and
settings. The off path's import cost (a child process) and the secret step's spans (the emulator)
are in tests/integration/test_telemetry_live.py."""

from __future__ import annotations

import json
import logging
import re

import pytest
from opentelemetry.trace import StatusCode

from realtime_gateway import telemetry
from realtime_gateway.core.events import parse
from realtime_gateway.core.message import CallMessage
from realtime_gateway.errors import ApiError
from realtime_gateway.gateway.http import Request, Response
from realtime_gateway.settings import SettingsError, telemetry_settings

SECRET = "ek_" + "7f" * 24


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
    # the steps' durations are whatever the machine took (a loaded one: a few ms)
    assert re.search(r"ERROR upstream_error \(secret \d+ms, sdp \d+ms ERROR upstream_error\)", otel.summary.getvalue())


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
        control = Control(tools, guardrail, sent.append, mark, lambda reason, why: None)
        control.on_event(parse(function_call("call_1", "lookup")))
        control.on_event(parse(function_call("call_2", "tell_me_4111111111111111")))  # a name nobody declared
        control.on_event(parse(json.dumps({"type": "response.done", "response": {"id": "resp_1"}})))
        delta = {"type": "response.output_audio_transcript.delta", "response_id": "resp_2", "item_id": "it_2"}
        control.on_event(parse(json.dumps({**delta, "delta": SPOKEN})))
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
