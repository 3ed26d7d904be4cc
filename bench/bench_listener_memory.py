"""The listener's memory over a long call: emulator and Azurite in their own processes, the listener here.

    .venv/bin/python -m bench.bench_listener_memory [--events 20000]

The listener asks for text output with its session.update (no speech synthesis in the emulator, so
events come fast), the emulator runs scripted turns until the call has produced --events events,
and this process samples its RSS (and, with --tracemalloc, traced allocations) as the archive grows.
"""

from __future__ import annotations

import argparse
import os
import threading
import time
import tracemalloc
import uuid

import requests

from bench.common import Report, emulator_process
from local.azurite import start_azurite
from realtime_gateway.archive.store import Archive
from realtime_gateway.archive.tables import table_service_from_env  # noqa: E402
from realtime_gateway.core.message import CallMessage
from realtime_gateway.listener.assembly import assemble
from realtime_gateway.listener.call_listener import ListenerConfig
from realtime_gateway.services import Services
from realtime_gateway.settings import Settings  # noqa: E402

REPORT_ARGS = ["--events", "10000"]
LONG_ARGS = ["--events", "40000"]


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--events", type=int, default=20000)
    p.add_argument(
        "--tracemalloc",
        action="store_true",
        help="also trace Python allocations (several times slower: the writer falls behind)",
    )
    args = p.parse_args()
    report = Report("listener_memory")
    az = start_azurite()
    emu, url = emulator_process()
    try:
        os.environ.update(IDENTITY_ENDPOINT=url + "/msi/token", IDENTITY_HEADER="local-identity-header")
        settings = Settings(endpoint=url, deployment="gpt-realtime", managed_identity_client_id="bench")
        archive = Archive(
            table_service_from_env({"AzureWebJobsStorage": az.connection_string}),
            "memev" + uuid.uuid4().hex[:6],
            "memse" + uuid.uuid4().hex[:6],
        )
        archive.ensure_tables()
        call_id = requests.post(url + "/_emulator/calls", timeout=10).json()["call_id"]
        now = time.time()
        msg = CallMessage(call_id=call_id, started_at=now, deadline=now + 3600)
        upstream = Services(settings, archive=archive).api
        upstream.headers()  # imports and the first token: a process cost, not a per-call one
        if args.tracemalloc:
            tracemalloc.start()
        lst = assemble(
            msg,
            archive,
            upstream,
            settings.websocket_endpoint,
            ListenerConfig(time_box=3600, session_update={"type": "realtime", "output_modalities": ["text"]}),
        )
        box = {}

        def run():
            try:
                box["r"] = lst.run()
            except BaseException as exc:
                box["error"] = exc
                raise

        t = threading.Thread(target=run, daemon=True)
        t.start()
        while not (archive.find_session(call_id) or {}).get("attached_at"):
            time.sleep(0.05)
        base_rss, (base_cur, _) = rss_mib(), tracemalloc.get_traced_memory()
        print(f"attached; RSS {base_rss:.1f} MiB, traced {base_cur / 2**20:.2f} MiB")
        emitted = 0
        t0 = time.monotonic()
        while emitted < args.events:
            emitted = requests.post(
                f"{url}/_emulator/calls/{call_id}/script", json={"responses": 50}, timeout=600
            ).json()["events"]
            # a real call is far slower than the emulator's scripted turns: let the writer keep up
            while lst.writer.backlog > 500 and t.is_alive():
                time.sleep(0.2)
            if not t.is_alive():
                break
            cur, peak = tracemalloc.get_traced_memory()
            print(
                f"{emitted:6d} events emitted, {lst.writer.backlog:5d} waiting for the writer: "
                f"RSS {rss_mib():6.1f} MiB"
                + (f", traced {cur / 2**20:6.2f} MiB (peak {peak / 2**20:.2f})" if args.tracemalloc else ""),
                flush=True,
            )
        requests.post(f"{url}/_emulator/calls/{call_id}/end", timeout=10)
        t.join(600)
        elapsed = time.monotonic() - t0
        cur, peak = tracemalloc.get_traced_memory()  # before reading back: only the listener's use
        end_rss = rss_mib()
        result = box["r"]
        kept = (cur - base_cur) / max(1, result.events)
        archived = sum(1 for _ in archive.read_events(call_id))
        report.line(
            f"archived {archived} rows ({result.events} service events) in {elapsed:.0f} s "
            f"({result.events / elapsed:.0f} events/s)"
        )
        seen = lst.writer.call_log.seen
        seen_bytes = seen.nbytes  # a fixed ring of 64-bit digests
        report.line(
            f"listener memory over the call: RSS {base_rss:.1f} MiB after attach -> {end_rss:.1f} MiB at the end "
            f"(+{end_rss - base_rss:.1f} MiB for {result.events} events); the event-id window holds the last "
            f"{len(seen)} ids in {seen_bytes / 1024:.0f} KiB, allocated when the listener starts"
        )
        if args.tracemalloc:
            report.line(
                f"traced Python allocations: after attach {base_cur / 2**20:.2f} MiB, peak {peak / 2**20:.2f} MiB, "
                f"after the call {cur / 2**20:.2f} MiB ({kept:.0f} B per event)"
            )
    finally:
        emu.terminate()
        emu.wait(10)
        az.stop()
        report.save()


if __name__ == "__main__":
    main()
