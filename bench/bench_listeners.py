"""Listeners through the local host's queue trigger: attach delay, capacity and cost per listener.

    .venv/bin/python -m bench.bench_listeners [--attach-calls 50] [--calls 100] [--hold 30] [--long]

Azurite and the emulator run in their own processes, the app in the local host (as `make run`
does), so the host process's CPU and RSS are the listeners' own. Three phases, one run:
  1. attach: --attach-calls calls created 5 a second, each put on the listener queue at once;
     call created -> sideband open (the session's attached_at) -> first archived event.
  2. cost: those calls stay live for --hold seconds (--long: 600) with one scripted response per
     call every ~5 s, then a burst (every call answers at once, over 1,000 events/s), then all
     end: CPU share, memory growth over the hold, events emitted that the archive lacks.
  3. capacity: --calls calls created at once, all live together on the one host (attach delay
     p50/p95/max, RSS and attach CPU per listener), then --more-calls arriving at 5/s while they
     are live: the attach target.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from types import SimpleNamespace

import requests

from bench.common import Report, emulator_process, p95, pyplot
from local.azurite import start_azurite
from local.processes import free_port
from local.testing.host_process import ROOT, HostProcess, gateway_settings, queue
from realtime_gateway.archive.store import Archive
from realtime_gateway.archive.tables import table_service_from_env
from realtime_gateway.core.message import CallMessage

REPORT_ARGS: list[str] = []  # what `make bench` runs (bench/run_all.py); --long adds LONG_ARGS
LONG_ARGS = ["--long"]
TICK = os.sysconf("SC_CLK_TCK")


def proc_cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime + stime


def proc_rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def ts(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


class Bench:
    def __init__(self, emu_url: str, host: HostProcess, archive: Archive, listener_queue) -> None:
        self.url, self.host, self.archive, self.queue = emu_url, host, archive, listener_queue
        self.http = requests.Session()
        self.pid = host.process.pid

    def new_call(self) -> tuple[str, float]:
        call_id = self.http.post(self.url + "/_emulator/calls", timeout=10).json()["call_id"]
        created = time.time()
        self.queue.send_message(CallMessage(call_id=call_id, started_at=created, deadline=created + 3600).to_json())
        return call_id, created

    def wait_attached(self, calls: dict[str, float], timeout: float) -> tuple[list[float], list[float]]:
        """(created -> attached_at, created -> first archived event) in ms, per call."""
        attach: dict[str, float] = {}
        first: dict[str, float] = {}
        end = time.monotonic() + timeout
        while len(first) < len(calls) and time.monotonic() < end:
            for call_id, created in calls.items():
                if call_id not in attach:
                    row = self.archive.find_session(call_id) or {}
                    if row.get("attached_at"):
                        attach[call_id] = (ts(row["attached_at"]) - created) * 1000
                if call_id in attach and call_id not in first:
                    event = next(iter(self.archive.read_events(call_id)), None)
                    if event is not None:
                        first[call_id] = (ts(event.received_at) - created) * 1000
            time.sleep(0.2)
        if len(first) < len(calls):
            raise RuntimeError(f"only {len(first)} of {len(calls)} listeners attached within {timeout:.0f} s")
        return list(attach.values()), list(first.values())

    def arrive(self, n: int, per_second: float = 5.0) -> dict[str, float]:
        calls = {}
        for _ in range(n):
            call_id, created = self.new_call()
            calls[call_id] = created
            time.sleep(1 / per_second)
        return calls

    def emitted(self, calls) -> int:
        return sum(self.http.get(f"{self.url}/_emulator/calls/{c}", timeout=10).json()["events"] for c in calls)

    def script(self, call_id: str) -> None:
        self.http.post(f"{self.url}/_emulator/calls/{call_id}/script?wait=0", json={"responses": 1}, timeout=10)

    def end_all(self, calls) -> None:
        for call_id in calls:
            self.http.post(f"{self.url}/_emulator/calls/{call_id}/end", timeout=10)

    def behind(self, calls, timeout: float = 60) -> tuple[int, int]:
        """(events the emulator emitted that the archive does not hold, events emitted) once settled."""
        emitted = {c: self.http.get(f"{self.url}/_emulator/calls/{c}", timeout=10).json()["events"] for c in calls}
        end = time.monotonic() + timeout
        while True:
            missing = 0
            for c in calls:
                archived = sum(1 for e in self.archive.read_events(c) if e.source == "service")
                missing += max(0, emitted[c] - archived)
            if missing == 0 or time.monotonic() > end:
                return missing, sum(emitted.values())
            time.sleep(1)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--attach-calls", type=int, default=50)
    ap.add_argument("--calls", type=int, default=100, help="live at once in phase 3")
    ap.add_argument("--more-calls", type=int, default=20, help="arriving at 5/s while --calls are live")
    ap.add_argument("--hold", type=float, default=30.0, help="seconds the calls stay live in phase 3")
    ap.add_argument("--long", action="store_true", help="hold for 600 s (the issue's long run)")
    args = ap.parse_args()
    hold = 600.0 if args.long else args.hold
    report = Report("listeners")

    az = start_azurite()
    emu, url = emulator_process()
    host = None
    try:
        emulator = SimpleNamespace(
            url=url, identity_endpoint=url + "/msi/token", identity_header="local-identity-header"
        )
        settings = gateway_settings(
            emulator,
            az,
            free_port(),
            LISTENER_SESSION_UPDATE=json.dumps({"type": "realtime", "output_modalities": ["text"]}),
        )
        host = HostProcess(ROOT, settings)
        host_json = json.loads((ROOT / "host.json").read_text())["extensions"]["queues"]
        report.line(
            f"host.json batchSize {host_json['batchSize']} + newBatchThreshold {host_json['newBatchThreshold']}; "
            f"LISTENER_MAX_CONCURRENT default; host pid {host.process.pid}"
        )
        archive = Archive(
            table_service_from_env({"AzureWebJobsStorage": az.connection_string}),
            settings["ARCHIVE_EVENTS_TABLE"],
            settings["ARCHIVE_SESSIONS_TABLE"],
        )
        archive.ensure_tables()
        b = Bench(url, host, archive, queue(az, settings["LISTENER_QUEUE"], base64_text=True))

        # 0. warm-up: the first listener pays for imports and the first token, not a per-call cost
        warm = dict([b.new_call()])
        b.wait_attached(warm, 60)
        b.end_all(warm)

        # 1. attach delay: calls arriving 5 a second; they stay live for phase 2
        calls = b.arrive(args.attach_calls)
        attach, first = b.wait_attached(calls, 120)
        report.figure(f"attach, {len(calls)} calls at 5/s: created -> sideband open", attach)
        report.figure(f"attach, {len(calls)} calls at 5/s: created -> first archived event", first)
        report.target(
            "attach p95 under 1 s (50 calls through the queue)", p95(first) < 1000, f"p95 {p95(first):.0f} ms"
        )

        # 2. cost: those calls live at a realistic rate, then a burst of every call answering at once
        ids = list(calls)
        cpu_a, t_a, rss_a = proc_cpu_seconds(b.pid), time.monotonic(), proc_rss_mib(b.pid)
        rss_series = [(0.0, rss_a)]
        while time.monotonic() - t_a < hold:
            for call_id in random.sample(ids, max(1, len(ids) // 5)):  # each call answers every ~5 s
                b.script(call_id)
            time.sleep(1)
            rss_series.append((time.monotonic() - t_a, proc_rss_mib(b.pid)))
        share = (proc_cpu_seconds(b.pid) - cpu_a) / (time.monotonic() - t_a)
        events_before = b.emitted(ids)
        burst_start = time.monotonic()
        with ThreadPoolExecutor(16) as pool:
            list(
                pool.map(
                    lambda c: b.http.post(f"{url}/_emulator/calls/{c}/script", json={"responses": 1}, timeout=60), ids
                )
            )
        burst_s = time.monotonic() - burst_start
        burst_events = b.emitted(ids) - events_before
        time.sleep(2)
        rss_end = proc_rss_mib(b.pid)
        rss_series.append((time.monotonic() - t_a, rss_end))
        b.end_all(ids)
        missing, emitted = b.behind(ids)
        report.line(
            f"cost, {len(ids)} live calls for {hold:.0f} s, one response per call every ~5 s: host CPU "
            f"{share * 100:.1f}% of one core ({share / len(ids) * 100:.2f}% per listener); RSS {rss_a:.1f} -> {rss_end:.1f} MiB"
        )
        report.line(
            f"burst: {burst_events} events in {burst_s:.1f} s ({burst_events / burst_s:.0f} events/s); {emitted} in all"
        )
        report.target(
            "listener memory flat (growth under 20 MiB over the hold)",
            rss_end - rss_a < 20,
            f"+{rss_end - rss_a:.1f} MiB over {hold:.0f} s with {len(ids)} calls",
        )
        report.target("zero events behind at the end", missing == 0, f"{missing} of {emitted} not archived")
        time.sleep(3)  # let those listeners finish

        # 3. capacity: --calls calls created at once, all live together on this one host ...
        rss0, cpu0, t0 = proc_rss_mib(b.pid), proc_cpu_seconds(b.pid), time.monotonic()
        with ThreadPoolExecutor(8) as pool:  # created as fast as a crowd would
            live = dict(pool.map(lambda _: b.new_call(), range(args.calls)))
        cap_attach, cap_first = b.wait_attached(live, 180)
        rss1, cpu1, t1 = proc_rss_mib(b.pid), proc_cpu_seconds(b.pid), time.monotonic()
        report.figure(f"capacity, {len(live)} calls at once: created -> sideband open", cap_attach)
        report.figure(f"capacity, {len(live)} calls at once: created -> first archived event", cap_first)
        report.line(
            f"capacity: host RSS {rss0:.1f} MiB -> {rss1:.1f} MiB with {len(live)} live listeners "
            f"({(rss1 - rss0) / len(live) * 1024:.0f} KiB per listener); attaching them took {cpu1 - cpu0:.1f} CPU s "
            f"({(cpu1 - cpu0) / len(live) * 1000:.0f} ms per attach) over {t1 - t0:.1f} s"
        )
        # ... and then calls arriving 5 a second while those are live
        more = b.arrive(args.more_calls)
        more_attach, more_first = b.wait_attached(more, 120)
        report.figure(
            f"capacity, {len(more)} more calls at 5/s with {len(live)} live: created -> first event", more_first
        )
        report.target(
            f"attach p95 under 1 s with {len(live)} live calls on one instance",
            p95(more_first) < 1000,
            f"p95 {p95(more_first):.0f} ms for calls arriving at 5/s ({len(live)} created at once: "
            f"p95 {p95(cap_first):.0f} ms, max {max(cap_first):.0f} ms)",
        )
        b.end_all([*live, *more])
        trouble = [
            line
            for line in host.logs.splitlines()
            if any(w in line.lower() for w in ("not open yet", "failed", "error", "warning", "traceback"))
        ]
        report.line(f"host log: {len(trouble)} warning/failure lines over the run")
        for line in trouble[:10]:
            report.line(f"  {line[:300]}")

        plt = pyplot()
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.5))
        ax1.hist(
            [first, cap_first, more_first],
            bins=20,
            label=[f"{len(calls)} at 5/s", f"{len(live)} at once", f"{len(more)} at 5/s, {len(live)} live"],
        )
        ax1.set_xlabel("created -> first archived event (ms)")
        ax1.set_ylabel("calls")
        ax1.legend()
        ax2.plot([t for t, _ in rss_series], [r for _, r in rss_series])
        ax2.set_xlabel(f"seconds with {len(ids)} live calls")
        ax2.set_ylabel("host RSS (MiB)")
        report.chart("attach_and_memory", fig)
    finally:
        report.save()  # what was measured, even when a later phase failed
        if host:
            host.stop()
        emu.terminate()
        emu.wait(10)
        az.stop()


if __name__ == "__main__":
    main()
