"""OpenTelemetry for the gateway: one trace per call, from `/api/connect` through the queue to the
listener and the archive writer, the metrics an operator alerts on, and trace ids on log records.

`setup()` runs once per process (function_app.py): Azure Monitor when APPLICATIONINSIGHTS_CONNECTION_STRING
is set (Entra auth with the managed identity), OTLP when OTEL_EXPORTER_OTLP_ENDPOINT is set, a one-line
summary per call on stdout when OTEL_TRACE_SUMMARY is on. With none of them nothing is imported and every
helper here returns at its first line. Call sites use `span()`, `annotate()`, `event()`, `count()`,
`observe()`; the trace context crosses the queue as a W3C `traceparent` in the CallMessage.

Attributes are ids and counts only (call, request, origin, principal id); string values still go
through the redactor, and exceptions are recorded by type and error code, never by message. A
listener mark (gap, hand-over, tool call, guardrail action) keeps only an allowlist of its fields.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Mapping

from . import redact
from .settings import SettingsError, TelemetrySettings, telemetry_settings

log = logging.getLogger(__name__)

# Metric names (docs/telemetry.md). Counters unless noted.
CALLS_STARTED = "gateway.calls.started"
CALLS_REFUSED = "gateway.calls.refused"  # attribute reason: the error code (limiter: e.g. "rate_limited")
CALLS_ACTIVE = "listener.calls.active"  # up-down counter: calls a listener is holding now
ATTACH_DELAY = "listener.attach_delay"  # histogram, ms from the call's answer to the sideband open
FIRST_AUDIO = "call.turn.first_audio"  # histogram, ms from the end of the user's speech to assistant audio
EVENTS_ARCHIVED = "archive.events"
WRITE_LATENCY = "archive.write_latency"  # histogram, ms per table write (transaction or session row)
GAPS = "listener.gaps"
RECONNECTS = "listener.reconnects"
HANDOVERS = "listener.handovers"
TOKENS = "call.tokens"  # attribute kind: input_text, input_audio, input_image, input_cached, output_text, output_audio
_COUNTERS = (CALLS_STARTED, CALLS_REFUSED, EVENTS_ARCHIVED, GAPS, RECONNECTS, HANDOVERS, TOKENS)
_HISTOGRAMS = (ATTACH_DELAY, FIRST_AUDIO, WRITE_LATENCY)

_tracer: Any = None  # an opentelemetry Tracer while telemetry is on
_instruments: dict[str, Any] = {}
_propagator: Any = None
_setup_lock = threading.Lock()
_setup_done = False


def enabled() -> bool:
    return _tracer is not None


# ---- set-up ---------------------------------------------------------------------------------------
def setup(env: Mapping[str, str] | None = None) -> str:
    """Configure exporters from the settings once per process; returns what is on ("off" if nothing).

    A bad telemetry setting is logged and leaves telemetry off: it must not stop the gateway.
    """
    global _setup_done
    with _setup_lock:
        if _setup_done:
            return "on" if enabled() else "off"
        _setup_done = True
        try:
            ts = telemetry_settings(env)
        except SettingsError as exc:
            log.error("telemetry off: %s", exc)
            return "off"
        if not (ts.connection_string or ts.otlp_endpoint or ts.summary):
            return "off"
        tracer_provider, meter_provider = _providers(ts)
        use(tracer_provider, meter_provider)
        _install_log_context()
        return ", ".join(
            name
            for name, on in (
                ("azure-monitor", ts.connection_string),
                ("otlp", ts.otlp_endpoint),
                ("summary", ts.summary),
            )
            if on
        )


def _providers(ts: TelemetrySettings) -> tuple[Any, Any]:
    """One tracer and one meter provider with the exporters the settings name (Azure Monitor, OTLP):
    the exporters alone, no auto-instrumentation (our spans tell the call's story; a span per SDK
    request would multiply the cost). Imported here: they cost tens of ms, paid only when on."""
    from opentelemetry import metrics, trace
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    resource = Resource.create({"service.name": ts.service_name})
    spans: list[Any] = []
    measures: list[Any] = []
    logs: list[Any] = []
    if ts.connection_string:
        from azure.monitor.opentelemetry.exporter import (
            AzureMonitorLogExporter,
            AzureMonitorMetricExporter,
            AzureMonitorTraceExporter,
        )

        options: dict[str, Any] = {"connection_string": ts.connection_string, "disable_offline_storage": True}
        if ts.aad_client_id is not None:  # App Insights has local auth off: ingestion takes the identity's token
            from azure.identity import ManagedIdentityCredential

            options["credential"] = ManagedIdentityCredential(client_id=ts.aad_client_id or None)
        spans.append(AzureMonitorTraceExporter(**options))
        measures.append(AzureMonitorMetricExporter(**options))
        logs.append(AzureMonitorLogExporter(**options))
    if ts.otlp_endpoint:
        from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        spans.append(OTLPSpanExporter())
        measures.append(OTLPMetricExporter())
        logs.append(OTLPLogExporter())
    tracer_provider = TracerProvider(resource=resource)
    for exporter in spans:
        tracer_provider.add_span_processor(BatchSpanProcessor(exporter))
    meter_provider = MeterProvider(
        resource=resource, metric_readers=[PeriodicExportingMetricReader(m) for m in measures]
    )
    trace.set_tracer_provider(tracer_provider)
    metrics.set_meter_provider(meter_provider)
    if logs:
        _export_logs(resource, logs)
    if ts.summary:
        from .trace_summary import CallSummaryProcessor

        tracer_provider.add_span_processor(CallSummaryProcessor(sys.stdout))
    return tracer_provider, meter_provider


def _export_logs(resource: Any, exporters: list[Any]) -> None:
    """Our log records (the realtime_gateway logger's, not every library's) to the exporters."""
    from opentelemetry._logs import set_logger_provider
    from opentelemetry.instrumentation.logging.handler import LoggingHandler
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import BatchLogRecordProcessor

    provider = LoggerProvider(resource=resource)
    for exporter in exporters:
        provider.add_log_record_processor(BatchLogRecordProcessor(exporter))
    set_logger_provider(provider)
    logger = logging.getLogger("realtime_gateway")
    logger.addHandler(LoggingHandler(level=logging.INFO, logger_provider=provider))
    _redact_exported_logs(logger)


class _NoRawException(logging.Filter):
    """The exporters' handler records `exc_info` raw (message and stack); the redactor already wrote
    the redacted traceback into `exc_text`, which console handlers still print. Drop the raw one."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info:
            redact.redact_record(record)  # sets exc_text (redacted) if the factory has not
            record.exc_info = None
        return True


def _redact_exported_logs(logger: logging.Logger) -> None:
    for handler in logger.handlers:
        if type(handler).__name__ == "LoggingHandler":
            handler.addFilter(_NoRawException())


def use(tracer_provider: Any, meter_provider: Any) -> None:
    """Point the helpers at these providers (setup(), and tests with in-memory exporters); None: off."""
    global _tracer, _propagator
    if tracer_provider is None:
        _tracer = None
        _instruments.clear()
        return
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    _propagator = TraceContextTextMapPropagator()
    _tracer = tracer_provider.get_tracer("realtime_gateway")
    meter = meter_provider.get_meter("realtime_gateway")
    instruments: dict[str, Any] = {name: meter.create_counter(name) for name in _COUNTERS}
    instruments.update({name: meter.create_histogram(name, unit="ms") for name in _HISTOGRAMS})
    instruments[CALLS_ACTIVE] = meter.create_up_down_counter(CALLS_ACTIVE)
    _instruments.clear()
    _instruments.update(instruments)


# ---- traces --------------------------------------------------------------------------------------
def _clean(attrs: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in attrs.items():
        if value is None:
            continue
        out[key] = redact.redact(value) if isinstance(value, str) else value
    return out


@contextmanager
def span(name: str, parent: Any = None, kind: str = "internal", **attrs: Any) -> Iterator[Any]:
    """A child span of the current one (or of `parent`, a context from `context_from()`/`current()`).
    `kind` server/consumer makes App Insights list it in `requests`, the others in `dependencies`.

    An exception leaving it marks the span as an error with the ApiError code (or the exception's
    type) and propagates. Add one around any new step: `with telemetry.span("limiter"): ...`.
    """
    if _tracer is None:
        yield None
        return
    from opentelemetry.trace import SpanKind

    with _tracer.start_as_current_span(
        name,
        context=parent,
        kind=SpanKind[kind.upper()],
        attributes=_clean(attrs),
        record_exception=False,
        set_status_on_exception=False,
    ) as sp:
        try:
            yield sp
        except BaseException as exc:
            _mark_error(sp, exc)
            raise


def _mark_error(sp: Any, exc: BaseException) -> None:
    from opentelemetry.trace import Status, StatusCode

    code = getattr(exc, "code", None) or type(exc).__name__
    sp.set_status(Status(StatusCode.ERROR, str(code)))
    sp.set_attribute("error.code", str(code))
    if isinstance(getattr(exc, "status", None), int):
        sp.set_attribute("http.response.status_code", exc.status)  # type: ignore[attr-defined]


def annotate(**attrs: Any) -> None:
    """Set attributes on the current span (e.g. the call id once the service answered)."""
    if _tracer is None:
        return
    from opentelemetry import trace

    trace.get_current_span().set_attributes(_clean(attrs))


def event(name: str, /, **attrs: Any) -> None:
    """A timestamped event on the current span (attach, reconnect, hang-up, gap)."""
    if _tracer is None:
        return
    from opentelemetry import trace

    trace.get_current_span().add_event(name, _clean({k: v for k, v in attrs.items() if _scalar(v)}))


def _scalar(value: Any) -> bool:
    return isinstance(value, (str, bool, int, float))


def traced(name: str) -> Any:
    """Decorator for a gateway route `route(p, req, rid, ...)`: its span, with the request id and
    origin; a call that gets through counts as started, an ApiError as refused by its code."""

    def wrap(route: Any) -> Any:
        def run(p: Any, req: Any, rid: str, *args: Any, **kwargs: Any) -> Any:
            if _tracer is None:
                return route(p, req, rid, *args, **kwargs)
            try:
                with span(name, kind="server", request_id=rid, origin=req.origin):
                    response = route(p, req, rid, *args, **kwargs)
            except Exception as exc:
                count(CALLS_REFUSED, reason=str(getattr(exc, "code", None) or type(exc).__name__))
                raise
            count(CALLS_STARTED)
            return response

        run.__name__, run.__doc__, run.__wrapped__ = route.__name__, route.__doc__, route  # type: ignore[attr-defined]
        return run

    return wrap


def traceparent() -> str | None:
    """The current span's W3C traceparent, for the queue message; None when off."""
    if _tracer is None:
        return None
    carrier: dict[str, str] = {}
    _propagator.inject(carrier)
    return carrier.get("traceparent")


def context_from(traceparent: str | None) -> Any:
    """The context a queue message's traceparent names (None: a new trace, as for old messages)."""
    if _tracer is None or not isinstance(traceparent, str) or not traceparent:
        return None
    return _propagator.extract({"traceparent": traceparent})


def current() -> Any:
    """The current context, to parent spans made on another thread (the archive writer's)."""
    if _tracer is None:
        return None
    from opentelemetry import context

    return context.get_current()


def attach(ctx: Any) -> None:
    """Make `ctx` current for the rest of this thread (a thread started for one call)."""
    if ctx is None:
        return
    from opentelemetry import context

    context.attach(ctx)


@contextmanager
def within(ctx: Any) -> Iterator[None]:
    """`ctx` current for a block, on a thread shared by many calls (the limits' pool)."""
    if ctx is None:
        yield
        return
    from opentelemetry import context

    token = context.attach(ctx)
    try:
        yield
    finally:
        context.detach(token)


@contextmanager
def listener_span(msg: Any, redelivered: bool) -> Iterator[None]:
    """The listener's span, in the trace the gateway started, counted among the active calls."""
    if _tracer is None:
        yield
        return
    principal = msg.principal or {}
    parent = context_from(msg.traceparent)
    _instruments[CALLS_ACTIVE].add(1)
    try:
        with span(
            "listener",
            parent=parent,
            kind="consumer",
            call_id=msg.call_id,
            request_id=msg.request_id,
            origin=msg.origin,
            principal_id=str(principal.get("id") or principal.get("userId") or "") or None,
            continuation=msg.continuation,
            redelivered=redelivered,
        ):
            yield
    finally:
        _instruments[CALLS_ACTIVE].add(-1)


# ---- metrics -------------------------------------------------------------------------------------
def count(name: str, value: int = 1, **attrs: Any) -> None:
    if _tracer is None or not value:
        return
    _instruments[name].add(value, attrs or None)


def observe(name: str, ms: float, **attrs: Any) -> None:
    if _tracer is None:
        return
    _instruments[name].record(ms, attrs or None)


def record_tokens(usage: Mapping[str, Any] | None) -> None:
    """Tokens of one `response.done` usage, by kind (cached tokens are part of input tokens)."""
    if _tracer is None or not isinstance(usage, Mapping):
        return
    inp = usage.get("input_token_details") or {}
    out = usage.get("output_token_details") or {}
    for kind, value in (
        ("input_text", inp.get("text_tokens")),
        ("input_audio", inp.get("audio_tokens")),
        ("input_image", inp.get("image_tokens")),
        ("input_cached", inp.get("cached_tokens")),
        ("output_text", out.get("text_tokens")),
        ("output_audio", out.get("audio_tokens")),
    ):
        if isinstance(value, int) and value > 0:
            _instruments[TOKENS].add(value, {"kind": kind})


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _flag(value: Any) -> bool:
    return isinstance(value, bool)


_WORD = re.compile(r"[a-z][a-z0-9_+ -]{0,31}")  # a code's own vocabulary: "socket dropped", "cancel+hangup"
_TOOL_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")  # the charset the service allows for function names


def _word(value: Any) -> bool:
    return isinstance(value, str) and _WORD.fullmatch(value) is not None


def _tool_name(value: Any) -> bool:
    return isinstance(value, str) and _TOOL_NAME.fullmatch(value) is not None


# What a mark may put on a span: enums, counts and flags. The archive keeps the rest (tool arguments
# and results, the guardrail's rule and matched words, error messages), which is call content.
_MARK_FIELDS: dict[str, dict[str, Callable[[Any], bool]]] = {
    "listener.gap": {"reason": _word, "seconds": _number, "attempts": _number, "continuation": _number},
    "listener.handover": {"continuation": _number},
    "listener.tool": {
        "name": _tool_name,
        "ok": _flag,
        "error_kind": _word,
        "duration_ms": _number,
        "sent": _flag,
        "outcome": _word,  # the built-in phone tools': transferred, fallback, hangup, refused
    },
    "listener.guardrail": {"action": _word, "hits": _number, "sent": _flag},
    "listener.policy": {"event": _word, "action": _word, "violations": _number, "sent": _flag},
    "listener.replay": {"items": _number, "sent": _number},
}
_UNDECLARED = ("unknown_tool", "module_error")  # the name is the model's, not the deployer's: left out


def mark_attributes(event_type: str, payload: Mapping[str, Any]) -> dict[str, Any]:
    """The allowlisted fields of a listener mark (an unknown mark type: none); a tool's name as `tool`."""
    fields = _MARK_FIELDS.get(event_type, {})
    out = {key: payload[key] for key, valid in fields.items() if valid(payload.get(key))}
    if event_type == "listener.tool":
        name = out.pop("name", None)
        if out.get("ok") or out.get("error_kind", _UNDECLARED[0]) not in _UNDECLARED:
            out["tool"] = name
    return {k: v for k, v in out.items() if v is not None}


def mark(event_type: str, payload: Mapping[str, Any]) -> None:
    """A listener mark (gap, hand-over, tool call, guardrail action) as an event on the current span
    (the listener's: the reader's and control threads' context) with its allowlisted fields, and a count."""
    if _tracer is None:
        return
    attrs = mark_attributes(event_type, payload)
    event(event_type, **attrs)
    if event_type == "listener.gap":
        count(GAPS, reason=str(attrs.get("reason") or ""))
    elif event_type == "listener.handover":
        count(HANDOVERS)


class TurnClock:
    """Per call, on the archive writer's thread: time from the end of the user's speech (or the start
    of a response) to the first assistant audio, and the tokens of each response. It sees each event
    as the archive already parsed it."""

    def __init__(self) -> None:
        self.turn_started: float | None = None

    def see(self, kind: str, ev: Any, received: float) -> None:
        if _tracer is None or not isinstance(ev, Mapping):
            return
        if kind == "input_audio_buffer.speech_stopped" or (kind == "response.created" and self.turn_started is None):
            self.turn_started = received
        elif kind in ("output_audio_buffer.started", "response.output_audio.delta") and self.turn_started:
            observe(FIRST_AUDIO, (received - self.turn_started) * 1000)
            self.turn_started = None
        elif kind == "response.done":
            record_tokens((ev.get("response") or {}).get("usage"))
            self.turn_started = None


# ---- logs ----------------------------------------------------------------------------------------
_log_context_installed = False


def _install_log_context() -> None:
    """Every log record carries `trace_id` and `span_id` (hex, "" outside a span) for formatters;
    the exporters' handlers add the same context to what they send."""
    global _log_context_installed
    if _log_context_installed:
        return
    from opentelemetry import trace

    previous = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        ctx = trace.get_current_span().get_span_context()
        record.trace_id = format(ctx.trace_id, "032x") if ctx.is_valid else ""
        record.span_id = format(ctx.span_id, "016x") if ctx.is_valid else ""
        return record

    logging.setLogRecordFactory(factory)
    _log_context_installed = True
