"""Listeners through the local host's queue trigger: attach delay, capacity and cost per listener.

    .venv/bin/python -m bench.bench_listeners [--attach-calls 50] [--calls 100] [--hold 30] [--long]

Azurite and the emulator run in their own processes, the app in the local host (as `make run`
does), so the host process's CPU and RSS are the listeners' own. Three phases, one run:
  1. attach: --attach-calls calls created 5 a second, each put on the listener queue at once;
     call created -> sideband open (the session's attached_at) -> first archived event.
  2. cost: those calls stay live for --hold seconds (--long: 600) with one scripted response per
     call every ~5 s, then a burst (every call answers at once, over 1,000 events/s), then all
     end: CPU share, events emitted that the archive lacks, and over time (a sample every 5 s)
     the host's RSS and the archive's bytes written per event (the writers' `bytes_written` on
     the session rows: event rows and session-row updates, as sent). Two targets: RSS grows at
     most 10 MiB after the warm-up (the first minute, or a fifth of a shorter hold), and the
     bytes per event of the last window are within 1.2x of the first's (flat, not growing
     with the call's length).
  3. capacity: --calls calls created at once, all live together on the one host (attach delay
     p50/p95/max, RSS and attach CPU per listener), then --more-calls arriving at 5/s while they
     are live: the attach target.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import signal
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
from realtime_gateway.archive.writer import BYTES_FIELD
from realtime_gateway.core.clock import day_of
from realtime_gateway.core.message import CallMessage

REPORT_ARGS: list[str] = []  # what `make bench` runs (bench/run_all.py); --long adds LONG_ARGS
LONG_ARGS = ["--long"]
TIMEOUT = 1800  # --long holds 600 s, and the phases around it take a few minutes
SAMPLE_SECONDS = 5.0
RSS_GROWTH_MIB = 10.0  # after the warm-up, over the rest of the hold
BYTES_FLAT = 1.2  # the last window's bytes per event over the first's
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

    def written(self, calls, since: float) -> tuple[int, int]:
        """(bytes written, events archived) over these calls as their session rows say now: one
        query per day, whatever the number of calls."""
        wanted = set(calls)
        days = {day_of(since), day_of(time.time())}
        rows = [r for d in days for r in self.archive.sessions_on(d) if r.get("call_id") in wanted]
        return sum(int(r.get(BYTES_FIELD) or 0) for r in rows), sum(int(r.get("events") or 0) for r in rows)

    def behind(self, calls, timeout: float = 60) -> tuple[int, int, int]:
        """(events the emulator emitted that the archive does not hold, events emitted, gaps the
        archive records: `listener.gap` rows, one per hand-over or reconnect) once settled."""
        emitted = {c: self.http.get(f"{self.url}/_emulator/calls/{c}", timeout=10).json()["events"] for c in calls}
        end = time.monotonic() + timeout
        while True:
            missing = gaps = 0
            for c in calls:
                rows = [e.event_type for e in self.archive.read_events(c)]
                gaps += rows.count("listener.gap")
                archived = sum(1 for t in rows if not t.startswith("listener."))
                missing += max(0, emitted[c] - archived)
            if missing == 0 or time.monotonic() > end:
                return missing, sum(emitted.values()), gaps


def snapshot(host: HostProcess, n: int) -> int:
    """The host's tracemalloc snapshot n (LOCAL_HOST_TRACEMALLOC), written when it says so."""
    os.kill(host.process.pid, signal.SIGUSR1)
    host.wait_for_log(f"tracemalloc snapshot {n} written", 120)
    return n + 1


def memstats(host: HostProcess) -> tuple[int, int, int, int]:
    """(malloc in use, free, mmapped bytes, Python blocks) as the host logs them on SIGUSR2."""
    count = host.logs.count("memstats: ")
    os.kill(host.process.pid, signal.SIGUSR2)
    host.wait_for_log("memstats: ", 60, count=count + 1)
    line = [ln for ln in host.logs.splitlines() if "memstats: " in ln][-1]
    u, f, m, b = (int(x) for x in re.findall(r"(?:in use|free|mmapped|blocks) (\d+)", line))
    return u, f, m, b


def grown(folder: str, top: int = 12) -> list[str]:
    """What the host's traced memory gained between its two snapshots, by allocating line."""
    import tracemalloc

    before = tracemalloc.Snapshot.load(os.path.join(folder, "host-0.tracemalloc"))
    after = tracemalloc.Snapshot.load(os.path.join(folder, "host-1.tracemalloc"))
    stats = after.compare_to(before, "lineno")
    total = sum(s.size_diff for s in stats)
    out = [f"tracemalloc, end of warm-up to end of hold: {total / 2**20:+.1f} MiB traced; the largest gains:"]
    for s in stats[:top]:
        frame = s.traceback[0]
        out.append(
            f"  {s.size_diff / 2**20:+7.2f} MiB {s.count_diff:+8d} blocks  {frame.filename.replace(str(ROOT) + '/', '')}:{frame.lineno}"
        )
    return out


def per_event(series: list[tuple[float, int, int]], window: float) -> list[tuple[float, float, float, int]]:
    """(from s, until s, bytes per event, events) per window of the (s, bytes, events) samples."""
    out = []
    start = series[0]
    for sample in series[1:]:
        span = sample[0] - start[0]
        if span >= window - 1e-6 or (sample is series[-1] and span >= window / 2):  # no stub at the end
            events = sample[2] - start[2]
            if events > 0:
                out.append((start[0], sample[0], (sample[1] - start[1]) / events, events))
            start = sample
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--attach-calls", type=int, default=50)
    ap.add_argument("--calls", type=int, default=100, help="live at once in phase 3")
    ap.add_argument("--more-calls", type=int, default=20, help="arriving at 5/s while --calls are live")
    ap.add_argument("--hold", type=float, default=30.0, help="seconds the calls stay live in phase 3")
    ap.add_argument("--long", action="store_true", help="hold for 600 s (the issue's long run)")
    ap.add_argument(
        "--tracemalloc",
        metavar="DIR",
        help="trace the host's Python allocations (slower: a diagnosis, not a figure) and report what grew "
        "from the end of the warm-up to the end of the hold; snapshots go to DIR",
    )
    ap.add_argument(
        "--memstats",
        action="store_true",
        help="also report the host's C allocator (in use, free, mmapped) and Python block counts over the hold",
    )
    ap.add_argument(
        "--host-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="an extra environment variable for the host process (e.g. MALLOC_ARENA_MAX=16); repeatable",
    )
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
            MALLOC_ARENA_MAX="2",  # as deployed (infra/main.bicep); --host-env MALLOC_ARENA_MAX=16 for glibc's default
            **({"LOCAL_HOST_TRACEMALLOC": args.tracemalloc} if args.tracemalloc else {}),
            **({"LOCAL_HOST_MEMSTATS": "1"} if args.memstats else {}),
            **dict(kv.split("=", 1) for kv in args.host_env),
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
            f"attach p95 under 1 s ({len(calls)} calls through the queue)",
            p95(first) < 1000,
            f"p95 {p95(first):.0f} ms",
        )

        # 2. cost: those calls live at a realistic rate, then a burst of every call answering at once
        ids = list(calls)
        cpu_a, t_a, rss_a = proc_cpu_seconds(b.pid), time.monotonic(), proc_rss_mib(b.pid)
        since = time.time()
        rss_series = [(0.0, rss_a)]
        bytes_series = [(0.0, *b.written(ids, since))]  # (s, bytes written, events archived)
        next_sample = SAMPLE_SECONDS
        warm = min(60.0, hold / 5)
        snapped = 0
        while time.monotonic() - t_a < hold:
            if not snapped and time.monotonic() - t_a >= warm:
                snapped = snapshot(host, 0) if args.tracemalloc else 1
                if args.memstats:
                    stats = [memstats(host)]
            for call_id in random.sample(ids, max(1, len(ids) // 5)):  # each call answers every ~5 s
                b.script(call_id)
            time.sleep(1)
            now = time.monotonic() - t_a
            rss_series.append((now, proc_rss_mib(b.pid)))
            if now >= next_sample:
                bytes_series.append((now, *b.written(ids, since)))
                next_sample += SAMPLE_SECONDS
        share = (proc_cpu_seconds(b.pid) - cpu_a) / (time.monotonic() - t_a)
        if args.tracemalloc:
            snapshot(host, 1)
            for line in grown(args.tracemalloc):
                report.line(line)
        if args.memstats:
            stats.append(memstats(host))
            (u0, f0, m0, b0), (u1, f1, m1, b1) = stats
            report.line(
                f"C allocator from the warm-up to the end of the hold: in use {u0 / 2**20:.1f} -> {u1 / 2**20:.1f} MiB, "
                f"free but kept {f0 / 2**20:.1f} -> {f1 / 2**20:.1f} MiB, mmapped {m0 / 2**20:.1f} -> {m1 / 2**20:.1f} MiB; "
                f"Python blocks {b0} -> {b1}"
            )
        windows = per_event(bytes_series, warm)
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
        missing, emitted, gaps = b.behind(ids)
        report.line(
            f"cost, {len(ids)} live calls for {hold:.0f} s, one response per call every ~5 s: host CPU "
            f"{share * 100:.1f}% of one core ({share / len(ids) * 100:.2f}% per listener); RSS {rss_a:.1f} -> {rss_end:.1f} MiB"
        )
        report.line(
            f"burst: {burst_events} events in {burst_s:.1f} s ({burst_events / burst_s:.0f} events/s); {emitted} in all"
        )
        rss_warm = next(r for t, r in rss_series if t >= warm)
        rss_hold = rss_series[-2][1]  # the last sample of the hold, before the burst
        report.line(
            f"host RSS: {rss_a:.1f} MiB at the start of the hold, {rss_warm:.1f} MiB after the {warm:.0f} s warm-up, "
            f"{rss_hold:.1f} MiB at its end, {rss_end:.1f} MiB after the burst; max {max(r for _, r in rss_series):.1f} MiB"
        )
        report.target(
            f"listener memory flat: RSS after the {warm:.0f} s warm-up grows at most {RSS_GROWTH_MIB:.0f} MiB",
            rss_hold - rss_warm <= RSS_GROWTH_MIB,
            f"+{rss_hold - rss_warm:.1f} MiB from {warm:.0f} s to {hold:.0f} s with {len(ids)} calls "
            f"(+{rss_end - rss_a:.1f} MiB over the whole hold and the burst)",
        )
        if len(windows) >= 2:
            first_w, last_w = windows[0], windows[-1]
            report.line(
                "archive bytes written per event, by window: "
                + ", ".join(f"{t0:.0f}-{t1:.0f} s {bpe:.0f} B ({ev} events)" for t0, t1, bpe, ev in windows)
            )
            report.target(
                f"archive bytes per event flat (last window within {BYTES_FLAT}x of the first)",
                last_w[2] <= first_w[2] * BYTES_FLAT,
                f"{first_w[2]:.0f} B/event in {first_w[0]:.0f}-{first_w[1]:.0f} s, {last_w[2]:.0f} B/event in "
                f"{last_w[0]:.0f}-{last_w[1]:.0f} s ({last_w[2] / first_w[2]:.2f}x)",
            )
        else:
            report.line("archive bytes per event: the hold is too short for two windows")
        report.target(
            "zero events behind at the end",
            missing == 0,
            f"{missing} of {emitted} not archived; {gaps} gaps recorded (a hand-over at the listener's "
            "time box, LISTENER_TIME_BOX_SECONDS 480, leaves one: events in it are not seen)",
        )
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
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.5))
        ax1.plot([t for t, _ in rss_series], [r for _, r in rss_series])
        ax1.axvline(warm, color="#999", linestyle=":", label="end of warm-up")
        ax1.axhline(
            rss_warm + RSS_GROWTH_MIB, color="#b00020", linestyle="--", label=f"warm-up + {RSS_GROWTH_MIB:.0f} MiB"
        )
        ax1.set_xlabel(f"seconds with {len(ids)} live calls")
        ax1.set_ylabel("host RSS (MiB)")
        ax1.legend()
        if windows:
            ax2.step([w[1] for w in windows], [w[2] for w in windows], where="pre")
            ax2.set_ylim(bottom=0)
        ax2.set_xlabel(f"seconds with {len(ids)} live calls")
        ax2.set_ylabel("archive bytes written per event")
        report.chart("memory_and_bytes", fig)
    finally:
        report.save()  # what was measured, even when a later phase failed
        if host:
            host.stop()
        emu.terminate()
        emu.wait(10)
        az.stop()


if __name__ == "__main__":
    main()
