"""Tracing overhead on POST /api/connect: two local hosts side by side in one run, one with the OTLP
exporters on (spans, metrics and logs sent to a receiver on loopback), one with telemetry off.

    .venv/bin/python -m bench.bench_telemetry [--n 40]

Starts its own emulator, Azurite, OTLP receiver and two hosts on free ports (listener disabled, so
the sideband work does not share the cores with the timed requests); prints medians, p90 and ratios.
"""

from __future__ import annotations

import argparse
import statistics
import time

import requests

from bench.common import alternate_connects, side_by_side_hosts
from local.azurite import start_azurite
from local.emulator import Emulator
from local.testing.otlp_sink import OtlpSink

# no listener, and no limits: the default 10 a minute would refuse this burst, and the limiter's
# table round trips (bench_limits measures them) would only add noise to both sides
NO_LISTENER = {"AzureWebJobs.call_listener.Disabled": "true", "RATE_LIMIT_PER_MINUTE": "0", "MAX_ACTIVE_CALLS": "0"}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=40, help="timed calls per host")
    ap.add_argument("--warmup", type=int, default=3)
    args = ap.parse_args()

    emu = Emulator(port=0).start()
    azurite = start_azurite()
    sink = OtlpSink()
    try:
        on = {"OTEL_EXPORTER_OTLP_ENDPOINT": sink.url, "OTEL_BSP_SCHEDULE_DELAY": "500"}
        with side_by_side_hosts(emu, azurite, {"off": NO_LISTENER, "on": {**NO_LISTENER, **on}}) as (hosts, offer):
            times = alternate_connects(
                hosts,
                offer,
                args.n,
                args.warmup,
                lambda name, call_id: requests.post(f"{emu.url}/_emulator/calls/{call_id}/end", timeout=10),
            )
        time.sleep(1.0)  # the last batch reaches the receiver
        exported = sum(1 for s in sink.spans() if s["name"] == "connect")
    finally:
        sink.stop()
        azurite.stop()
        emu.stop()

    def p90(xs):
        return statistics.quantiles(xs, n=10)[-1]

    off, on_ = statistics.median(times["off"]), statistics.median(times["on"])
    print(f"calls per host: {args.n} (after {args.warmup} warm-up); connect spans exported: {exported}")
    print(f"telemetry off: median {off:7.1f} ms  p90 {p90(times['off']):7.1f} ms")
    print(f"OTLP on:       median {on_:7.1f} ms  p90 {p90(times['on']):7.1f} ms")
    print(
        f"added (median): {on_ - off:.1f} ms; ratio on/off: {on_ / off:.2f}x "
        f"(p90 ratio {p90(times['on']) / p90(times['off']):.2f}x)"
    )


if __name__ == "__main__":
    main()
