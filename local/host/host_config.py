"""host.json, read into the few numbers the local host needs, with the real host's defaults."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

TIMESPAN = re.compile(r"^(?:(\d+)\.)?(\d{1,2}):(\d{1,2}):(\d{1,2})(?:\.(\d+))?$")


def parse_timespan(value, default: float | None) -> float | None:
    """'hh:mm:ss' (or 'd.hh:mm:ss') to seconds; '-1' means unbounded (None)."""
    if value is None or value == "":
        return default
    if isinstance(value, (int, float)):
        return float(value) / 1000.0  # host.json numbers for intervals are milliseconds
    text = str(value).strip()
    if text == "-1":
        return None
    m = TIMESPAN.match(text)
    if not m:
        raise ValueError(f"host.json: {value!r} is not a timespan like 00:05:00")
    days, h, mi, s, frac = m.groups()
    seconds = int(days or 0) * 86400 + int(h) * 3600 + int(mi) * 60 + int(s)
    return seconds + (float("0." + frac) if frac else 0.0)


@dataclass(frozen=True)
class QueueOptions:
    batch_size: int = 16
    new_batch_threshold: int = 8
    max_polling_interval: float = 60.0
    visibility_timeout: float = 0.0
    max_dequeue_count: int = 5
    message_encoding: str = "base64"


@dataclass(frozen=True)
class HostConfig:
    route_prefix: str = "api"
    function_timeout: float | None = 300.0  # Consumption's default; host.json usually says more
    queues: QueueOptions = QueueOptions()


def load_host_config(script_root: Path) -> HostConfig:
    path = script_root / "host.json"
    data = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    ext = data.get("extensions", {})
    prefix = ext.get("http", {}).get("routePrefix", "api").strip("/")
    q = ext.get("queues", {})
    batch = int(q.get("batchSize", 16))
    if not 1 <= batch <= 32:
        raise ValueError(f"host.json: extensions.queues.batchSize must be 1..32, got {batch}")
    encoding = str(q.get("messageEncoding", "base64")).lower()
    if encoding not in ("base64", "none"):
        raise ValueError(f"host.json: extensions.queues.messageEncoding must be base64 or none, got {encoding!r}")
    queues = QueueOptions(
        batch_size=batch,
        new_batch_threshold=int(q.get("newBatchThreshold", batch // 2)),
        max_polling_interval=parse_timespan(q.get("maxPollingInterval"), 60.0) or 60.0,
        visibility_timeout=parse_timespan(q.get("visibilityTimeout"), 0.0) or 0.0,
        max_dequeue_count=int(q.get("maxDequeueCount", 5)),
        message_encoding=encoding,
    )
    return HostConfig(
        route_prefix=prefix, function_timeout=parse_timespan(data.get("functionTimeout"), 300.0), queues=queues
    )
