"""An OTLP/HTTP receiver on loopback (protobuf, as the SDK's HTTP exporters send it): what a host or
benchmark exports lands here, raw for secret scans and decoded for assertions."""

from __future__ import annotations

import base64
import gzip
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from google.protobuf.json_format import MessageToDict
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

_KINDS: dict[str, Any] = {
    "/v1/traces": ExportTraceServiceRequest,
    "/v1/metrics": ExportMetricsServiceRequest,
    "/v1/logs": ExportLogsServiceRequest,
}


def _value(v: dict[str, Any]) -> Any:
    for key in ("stringValue", "boolValue", "doubleValue"):
        if key in v:
            return v[key]
    if "intValue" in v:
        return int(v["intValue"])
    return v


def _id(b64: str | None) -> str:
    """protobuf's JSON mapping gives bytes as base64; trace and span ids read as hex."""
    return base64.b64decode(b64).hex() if b64 else ""


def _attrs(items: list[dict[str, Any]] | None) -> dict[str, Any]:
    return {a["key"]: _value(a.get("value", {})) for a in items or []}


class OtlpSink:
    def __init__(self) -> None:
        self.raw: list[bytes] = []
        self._decoded: dict[str, list[dict[str, Any]]] = {path: [] for path in _KINDS}
        self._lock = threading.Lock()
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                kind = _KINDS.get(self.path)
                if kind is None:
                    self.send_response(404)
                    self.end_headers()
                    return
                message = kind()
                message.ParseFromString(body)
                with sink._lock:
                    sink.raw.append(body)
                    sink._decoded[self.path].append(MessageToDict(message))
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, name="otlp-sink", daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> OtlpSink:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def _requests(self, path: str) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._decoded[path])

    def spans(self) -> list[dict[str, Any]]:
        """Every span received: ids in hex, attributes and events as dicts."""
        out = []
        for req in self._requests("/v1/traces"):
            for rs in req.get("resourceSpans", []):
                for ss in rs.get("scopeSpans", []):
                    for sp in ss.get("spans", []):
                        out.append(
                            {
                                "name": sp["name"],
                                "kind": sp.get("kind"),
                                "trace_id": _id(sp["traceId"]),
                                "span_id": _id(sp["spanId"]),
                                "parent": _id(sp.get("parentSpanId")),
                                "attributes": _attrs(sp.get("attributes")),
                                "status": sp.get("status", {}),
                                "events": [(e["name"], _attrs(e.get("attributes"))) for e in sp.get("events", [])],
                            }
                        )
        return out

    def metrics(self) -> dict[str, list[dict[str, Any]]]:
        """Metric name -> its data points (cumulative: the last export holds the totals)."""
        out: dict[str, list[dict[str, Any]]] = {}
        for req in self._requests("/v1/metrics"):
            for rm in req.get("resourceMetrics", []):
                for sm in rm.get("scopeMetrics", []):
                    for m in sm.get("metrics", []):
                        data = m.get("sum") or m.get("histogram") or m.get("gauge") or {}
                        out[m["name"]] = [
                            {**p, "attributes": _attrs(p.get("attributes"))} for p in data.get("dataPoints", [])
                        ]
        return out

    def logs(self) -> list[dict[str, Any]]:
        out = []
        for req in self._requests("/v1/logs"):
            for rl in req.get("resourceLogs", []):
                for sl in rl.get("scopeLogs", []):
                    for rec in sl.get("logRecords", []):
                        out.append(
                            {
                                "body": _value(rec.get("body", {})),
                                "trace_id": _id(rec.get("traceId")),
                                "span_id": _id(rec.get("spanId")),
                                "attributes": _attrs(rec.get("attributes")),
                            }
                        )
        return out
