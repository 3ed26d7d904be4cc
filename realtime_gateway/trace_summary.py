"""One line per call trace on a stream (OTEL_TRACE_SUMMARY, on in `make run`): connect and its steps,
each listener, the archive flushes, how the call ended. Printed when the call's last listener ends
(or when a connect fails); the trace id is what an operator pastes into a trace viewer or KQL."""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any, TextIO

from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
from opentelemetry.trace import StatusCode

MAX_TRACES = 1000  # calls whose listener has not ended yet; the oldest are dropped beyond this


def _ms(sp: ReadableSpan) -> float:
    return ((sp.end_time or 0) - (sp.start_time or 0)) / 1e6


def _step(sp: ReadableSpan) -> str:
    text = f"{sp.name} {_ms(sp):.0f}ms"
    source = (sp.attributes or {}).get("source")
    if source:  # the secret: pooled or minted
        text += f" {source}"
    if sp.status.status_code is StatusCode.ERROR:
        text += f" ERROR {sp.status.description}"
    return text


def summarize(spans: list[ReadableSpan]) -> str:
    spans = sorted(spans, key=lambda s: s.start_time or 0)
    first = spans[0]
    call_id = next((s.attributes.get("call_id") for s in spans if s.attributes and s.attributes.get("call_id")), "-")
    parts = []
    for sp in spans:
        if sp.name == "connect":
            steps = [
                _step(c)
                for c in spans
                if c.name != "listener" and c.parent is not None and c.parent.span_id == sp.context.span_id
            ]
            parts.append(_step(sp) + (f" ({', '.join(steps)})" if steps else ""))
        elif sp.name == "listener":
            attrs = dict(sp.attributes or {})
            events = [e.name for e in sp.events]
            flushes = [
                f for f in spans if f.name == "archive.flush" and f.parent and f.parent.span_id == sp.context.span_id
            ]
            archived = sum(int(str((f.attributes or {}).get("events", 0))) for f in flushes)
            attach = next((e.attributes or {} for e in sp.events if e.name == "attached"), {})
            text = f"listener#{attrs.get('continuation', 0)} {_ms(sp) / 1000:.1f}s"
            if "attach_delay_ms" in attach:
                text += f" attach {attach['attach_delay_ms']!s}ms"
            for name, label in (
                ("reconnected", "reconnects"),
                ("listener.gap", "gaps"),
                ("listener.tool", "tool calls"),
                ("listener.guardrail", "guardrail hits"),
            ):
                if events.count(name):
                    text += f", {events.count(name)} {label}"
            text += f", {archived} events in {len(flushes)} flushes"
            text += f", {attrs.get('outcome', '?')}: {attrs.get('end_reason') or _step(sp).split(' ', 2)[-1]}"
            parts.append(text)
    return f"trace {format(first.context.trace_id, '032x')} call {call_id}: " + " -> ".join(parts)


class CallSummaryProcessor(SpanProcessor):
    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self._traces: OrderedDict[int, list[ReadableSpan]] = OrderedDict()
        self._lock = threading.Lock()

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        pass

    def on_end(self, span: ReadableSpan) -> None:
        trace_id = span.context.trace_id
        with self._lock:
            spans = self._traces.setdefault(trace_id, [])
            spans.append(span)
            done = (span.name == "listener" and (span.attributes or {}).get("outcome") != "handed_over") or (
                span.name == "connect" and span.status.status_code is StatusCode.ERROR
            )
            if done:
                del self._traces[trace_id]
            elif len(self._traces) > MAX_TRACES:
                self._traces.popitem(last=False)
        if done:
            # one write, newline included: print() writes the text and the newline apart, and an
            # unbuffered stream shared with the log handler could put a log line between them
            self.stream.write(summarize(spans) + "\n")
            self.stream.flush()

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True
