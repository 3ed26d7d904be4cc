"""Load on the local stack: a burst of concurrent POST /api/connect, then live calls with listeners.

    .venv/bin/python -m bench.bench_load [--connects 200] [--live 50] [--turns 5] [--hold 30] [--long]

Azurite, the emulator and the local host (this repo's app) each run in a process of their own.
  a. --connects callers, each with its own aiortc peer's offer and an allowed Origin, POST
     /api/connect at once: statuses counted (zero errors expected), latency p50/p95/p99/max.
  b. every call of the burst is recorded by the listener its /api/connect queued (the real path).
     --live of them stay live for --hold s with --turns scripted turns each, then end; the others
     leave as soon as their listener attached, freeing it for calls still queued. Per call: the
     events the emulator emitted on the sideband against the archived ones (missing, duplicates),
     the hash chain (audit.verify_call), attach delay, and the host's warning/error lines.
No media flows: each caller keeps its peer open but never applies the answer (audio goes browser
<-> service in production, not through this stack; 50 media streams would take the 2 cores). The
emulator keeps such a call live (a closed peer's call ends about 60 s in, on ICE failure). The
listener's session.update makes the replies text: an audio reply waits for a track nobody receives.
"""

from __future__ import annotations

import argparse
import json
import re
import signal
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace
from typing import Any, Callable, Iterable, TypeVar

import requests

from bench.common import Report, emulator_process, pct
from local.azurite import start_azurite
from local.processes import free_port
from local.testing.host_process import ROOT, HostProcess, gateway_settings
from local.testing.offer import OfferPeer
from realtime_gateway.archive.store import Archive
from realtime_gateway.archive.tables import table_service_from_env
from realtime_gateway.audit.verify import verify_call

REPORT_ARGS: list[str] = []  # `make bench`: the defaults, about 2-3 minutes on 2 cores
LONG_ARGS = ["--long"]
TIMEOUT = 900
ORIGIN = "https://load.example.test"
# Raised so the deliberate burst is measured, not refused (README: Cost and abuse control); the
# limiter stays on, so its table round trips and ETag contention are part of what is measured.
LIMITS = {
    "RATE_LIMIT_PER_MINUTE": 100000,  # every caller is 127.0.0.1, one client: the default 10/min would refuse all but 10
    "MAX_ACTIVE_CALLS": 500,  # the whole burst is live at once, over the default 100 (500 is the setting's maximum)
}
T = TypeVar("T")
R = TypeVar("R")


def fan_out(fn: Callable[[T], R], items: Iterable[T], workers: int) -> list[R]:
    """`fn` over `items` on `workers` threads; on Ctrl-C returns at once (the stack's stop ends the rest)."""
    pool = ThreadPoolExecutor(workers)
    try:
        return list(pool.map(fn, items))
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def wait_for(what: str, pending: set[str], done: Callable[[str], bool], timeout: float, interval: float = 0.5) -> None:
    end = time.monotonic() + timeout
    while pending:
        for call_id in list(pending):
            if done(call_id):
                pending.discard(call_id)
        if not pending:
            return
        if time.monotonic() > end:
            raise RuntimeError(f"{len(pending)} calls not {what} within {timeout:.0f} s (e.g. {sorted(pending)[:3]})")
        time.sleep(interval)


_local = threading.local()


def http() -> requests.Session:
    """One session per thread (a Session is not meant to be shared between threads)."""
    if not hasattr(_local, "s"):
        _local.s = requests.Session()
    return _local.s


class Burst:
    """`n` callers, each its own peer (offer) and connection, released together."""

    def __init__(self, url: str, n: int) -> None:
        self.url, self.n = url, n
        self.gate = threading.Barrier(n, timeout=120)
        self.peers: list[OfferPeer] = []
        self.lock = threading.Lock()

    def one(self, _: int) -> dict[str, Any]:
        peer = OfferPeer()
        with self.lock:
            self.peers.append(peer)  # closed at the end, whatever happens
        headers = {"Content-Type": "application/sdp", "Origin": ORIGIN}
        conn = requests.Session()  # its own connection, as separate browsers
        self.gate.wait()
        t = time.perf_counter()
        try:
            r = conn.post(f"{self.url}/api/connect", data=peer.offer.encode(), headers=headers, timeout=120)
        except requests.RequestException as exc:
            return {"status": type(exc).__name__, "ms": (time.perf_counter() - t) * 1000}
        finally:
            conn.close()
        out: dict[str, Any] = {"status": r.status_code, "ms": (time.perf_counter() - t) * 1000}
        if r.status_code == 201:
            out.update(
                call_id=r.headers.get("x-call-id"),
                listener=r.headers.get("x-listener"),
                cors=r.headers.get("Access-Control-Allow-Origin") == ORIGIN,
            )
        else:
            out["body"] = r.text[:300]
        return out

    def close(self) -> None:
        def close(peer: OfferPeer) -> None:
            try:
                peer.close()
            except Exception:  # a peer that never connected may time out closing: it goes with the process
                pass

        fan_out(close, list(self.peers), 32)


# The host's log lines carry no level: these words are in every warning and error the app and
# the host log (realtime_gateway/, local/host/), and in no line they log at info.
TROUBLE = re.compile(
    r"fail|error|refus|unavailable|not checked|not queued|not open yet|dropped|redeliver|retrying|giving up"
    r"|timeout|time out|cannot|could not|unexpected|poison|gone|traceback| -> [45]\d\d ",
    re.IGNORECASE,
)


def is_trouble(line: str) -> bool:
    return bool(TROUBLE.search(line))


def shape(line: str) -> str:
    """A log line without its time and ids, so repeats of one warning count together."""
    line = re.sub(r"^\[[^]]*\] ", "", line)
    line = re.sub(r"rtc_\w+", "<call>", line)
    line = re.sub(r"\b[0-9a-f]{32}\b|\b[0-9a-f-]{36}\b", "<id>", line)
    return re.sub(r"\d+", "N", line)


def error_code(body: str | None) -> str:
    try:
        return f" {json.loads(body or '')['error']['code']}"
    except (ValueError, KeyError, TypeError):
        return ""


def archived(archive: Archive, call_id: str) -> dict[str, Any]:
    rows = list(archive.read_events(call_id))
    service = [r for r in rows if r.source == "service"]
    ids = [r.event_id for r in service]
    return {
        "rows": len(rows),
        "marks": len(rows) - len(service),  # listener.gap / handover rows: none expected
        "mark_types": Counter(r.event_type for r in rows if r.source != "service"),
        "duplicates": len(ids) - len(set(ids)),
        # the emulator counts every event it emits; the session.created each sideband socket gets
        # on opening is sent to that socket only, outside the count
        "events": len({r.event_id for r in service if r.event_type != "session.created"}),
        "created": sum(r.event_type == "session.created" for r in service),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--long", action="store_true", help="300 connects, 100 live calls, 20 turns over 300 s")
    ap.add_argument("--connects", type=int, default=200, help="concurrent POST /api/connect (at most 490: the slots)")
    ap.add_argument("--live", type=int, default=50, help="calls of the burst kept live with scripted turns")
    ap.add_argument("--turns", type=int, default=5, help="scripted turns per live call")
    ap.add_argument("--hold", type=float, default=30.0, help="seconds the live calls stay live (turns spread over it)")
    ap.add_argument(
        "--no-active-cap",
        action="store_true",
        help="MAX_ACTIVE_CALLS=0 (no slots row): the burst without the active-call cap, to tell its cost apart",
    )
    args = ap.parse_args()
    if args.long:
        args.connects, args.live, args.turns, args.hold = 300, 100, 20, 300.0
    # one host runs at most 160 listeners (host.json): the live calls must leave room for the rest to attach
    if not 1 <= args.live <= min(args.connects, 120) or args.connects > 490:
        ap.error("need 1 <= --live <= min(--connects, 120) and --connects <= 490 (MAX_ACTIVE_CALLS is at most 500)")
    # run_all stops a bench with SIGTERM, a closed terminal sends SIGHUP: stop the stack either way
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda signum, _: sys.exit(128 + signum))

    report = Report("load")
    az = emu = host = burst = None
    background = ThreadPoolExecutor(16)
    try:
        az = start_azurite()
        emu, emu_url = emulator_process()
        emulator = SimpleNamespace(
            url=emu_url, identity_endpoint=emu_url + "/msi/token", identity_header="local-identity-header"
        )
        port = free_port()
        settings = gateway_settings(
            emulator,
            az,
            port,
            origins=(ORIGIN,),
            PYTHON_THREADPOOL_THREAD_COUNT="24",  # as infra deploys it (main.bicep)
            LISTENER_SESSION_UPDATE=json.dumps({"type": "realtime", "output_modalities": ["text"]}),
            **{**LIMITS, **({"MAX_ACTIVE_CALLS": 0} if args.no_active_cap else {})},
        )
        host = HostProcess(ROOT, settings, port=port)
        archive = Archive(
            table_service_from_env({"AzureWebJobsStorage": az.connection_string}),
            settings["ARCHIVE_EVENTS_TABLE"],
            settings["ARCHIVE_SESSIONS_TABLE"],
        )
        archive.ensure_tables()
        cap = (
            "MAX_ACTIVE_CALLS 100 -> 0 (--no-active-cap: no slots row)"
            if args.no_active_cap
            else f"MAX_ACTIVE_CALLS 100 -> 500 (all {args.connects} calls are live at once; 500 is its maximum)"
        )
        report.line(
            "limits raised for the deliberate burst (the limiter stays on, its cost measured): "
            f"RATE_LIMIT_PER_MINUTE 10 -> 100000 (every caller is one client, 127.0.0.1); {cap}; "
            "daily budgets stay off (default 0); secret pool default (8); PYTHON_THREADPOOL_THREAD_COUNT 24 as deployed"
        )

        def session(call_id: str) -> dict[str, Any]:
            return archive.find_session(call_id) or {}

        def emulator_call(call_id: str) -> dict[str, Any]:
            return http().get(f"{emu_url}/_emulator/calls/{call_id}", timeout=30).json()

        def end(call_id: str) -> None:  # as if the browser left
            http().post(f"{emu_url}/_emulator/calls/{call_id}/end", timeout=30)

        # warm-up: imports, the identity token and the secret pool's first fill are not load
        with OfferPeer() as peer:
            for _ in range(2):
                resp = http().post(
                    f"{host.url}/api/connect",
                    data=peer.offer.encode(),
                    headers={"Content-Type": "application/sdp"},
                    timeout=60,
                )
                resp.raise_for_status()
                warm = resp.headers["x-call-id"]
                wait_for("attached", {warm}, lambda c: bool(session(c).get("attached_at")), 60)
                end(warm)
                wait_for("ended", {warm}, lambda c: session(c).get("state") == "ended", 60)
        time.sleep(2)  # let the pool refill, as between visitors
        host_lines = len(host.logs.splitlines())

        # (a) the burst
        burst = Burst(host.url, args.connects)
        results = fan_out(burst.one, range(args.connects), args.connects)
        statuses = Counter(f"{r['status']}{error_code(r.get('body'))}" for r in results)
        ok = [r for r in results if r["status"] == 201]
        errors = len(results) - len(ok)
        ms = [r["ms"] for r in results]
        ok_ms = [r["ms"] for r in ok]
        not_queued = sum(r.get("listener") != "queued" for r in ok)
        no_cors = sum(not r.get("cors") for r in ok)
        report.line(
            f"(a) {args.connects} concurrent POST /api/connect (each its own offer, Origin {ORIGIN}): statuses "
            + ", ".join(f"{s} x{n}" for s, n in sorted(statuses.items()))
            + f"; all answered within {max(ms) / 1000:.1f} s"
        )
        report.line(
            f"(a) latency, all {len(ms)}: p50 {pct(ms, 50):.0f} ms, p95 {pct(ms, 95):.0f} ms, "
            f"p99 {pct(ms, 99):.0f} ms, max {max(ms):.0f} ms"
        )
        if errors and ok_ms:
            report.line(
                f"(a) latency, the {len(ok_ms)} 201s: p50 {pct(ok_ms, 50):.0f} ms, p95 {pct(ok_ms, 95):.0f} ms, "
                f"p99 {pct(ok_ms, 99):.0f} ms, max {max(ok_ms):.0f} ms"
            )
        handler = [
            float(line.rsplit(" ", 2)[-2])
            for line in host.logs.splitlines()[host_lines:]
            if "POST connect -> " in line and line.endswith(" ms")
        ]
        if handler:
            report.line(
                f"(a) inside the host (handler time, its log): p50 {pct(handler, 50):.0f} ms, "
                f"p95 {pct(handler, 95):.0f} ms, max {max(handler):.0f} ms; the rest is mostly the wait for one "
                "of the 24 worker threads"
            )
        report.line(f"(a) of the 201s: {not_queued} without a queued listener, {no_cors} without the CORS header")
        for r in [r for r in results if r["status"] != 201][:3]:
            report.line(f"  e.g. {r['status']} {r.get('body', '')}")
        report.target(
            f"{args.connects} concurrent /api/connect with zero errors",
            errors + not_queued + no_cors == 0,
            f"{len(ok)}/{len(results)} 201, {errors} errors"
            + "".join(f" ({s} x{n})" for s, n in sorted(statuses.items()) if not s.startswith("201"))
            + f", {not_queued} not queued; p50 {pct(ms, 50):.0f} ms, "
            f"p95 {pct(ms, 95):.0f} ms, p99 {pct(ms, 99):.0f} ms, max {max(ms):.0f} ms",
        )
        if not ok:
            raise RuntimeError("no call was created: nothing to record")

        # (b) every call's listener attaches from the queue /api/connect filled; a short call leaves
        # once recorded, freeing its listener for the calls still queued
        calls = [r["call_id"] for r in ok]
        live, short = calls[: args.live], calls[args.live :]
        delay: dict[str, float] = {}
        died: dict[str, str] = {}  # calls the emulator ended before their listener came
        pending, leaving = set(calls), set(short)
        end_by, checked = time.monotonic() + 180, time.monotonic()
        while pending:
            for c in list(pending):
                row = session(c)
                if row.get("attached_at"):
                    delay[c] = float(row.get("attach_delay_ms") or 0)
                    pending.discard(c)
                    if c in leaving:
                        background.submit(end, c)
            if pending and time.monotonic() - checked > 5:
                checked = time.monotonic()
                for c in list(pending):
                    info = emulator_call(c)
                    if info["state"] != "live":
                        died[c] = str(info["end_reason"])
                        pending.discard(c)
            if pending and time.monotonic() > end_by:
                raise RuntimeError(f"{len(pending)} listeners not attached within 180 s")
            time.sleep(0.3)
        live = [c for c in live if c not in died]
        short = [c for c in short if c not in died]
        late = sum(d > 5000 for d in delay.values())
        report.line(
            f"(b) listeners attached to {len(delay)} of {len(calls)} calls ({len(died)} ended before one came: "
            f"{dict(Counter(died.values()))}); {late} waited over 5 s for a free listener (one host runs 160 at "
            "once: host.json)"
        )
        wait_for(
            "in a text session",
            set(live),
            lambda c: any(e.event_type == "session.updated" for e in archive.read_events(c)),
            60,
        )

        def turn(call_id: str) -> int:
            return (
                http()
                .post(f"{emu_url}/_emulator/calls/{call_id}/script", json={"responses": 1}, timeout=120)
                .status_code
            )

        hold_start = time.monotonic()
        scripts: Counter[int] = Counter()
        for i in range(args.turns):  # the turns spread over the hold, every live call answering each time
            scripts.update(fan_out(turn, live, 16))
            time.sleep(max(0.0, hold_start + (i + 1) * args.hold / args.turns - time.monotonic()))
        fan_out(end, live, 16)
        attached = live + short
        wait_for("ended", set(attached), lambda c: session(c).get("state") == "ended", 120)

        def check(call_id: str) -> dict[str, Any]:
            info = emulator_call(call_id)
            got = archived(archive, call_id)
            return {
                **got,
                "emitted": info["events"],
                "end_reason": info["end_reason"],
                "missing": max(0, info["events"] - got["events"]),
                "surplus": max(0, got["events"] - info["events"]),
                "row_events": session(call_id).get("events"),
                "verified": verify_call(archive, call_id).ok,
            }

        checks = dict(zip(attached, fan_out(check, attached, 8), strict=True))
        for label, group in (
            (f"{len(live)} live calls, {args.turns} turns each over {args.hold:.0f} s", live),
            (f"{len(short)} calls that left once recorded", short),
        ):
            if not group:
                continue
            g = [checks[c] for c in group]
            report.line(
                f"(b) {label}: events emitted {sum(x['emitted'] for x in g)}, archived "
                f"{sum(x['events'] for x in g)} (+{sum(x['created'] for x in g)} session.created), missing "
                f"{sum(x['missing'] for x in g)}, duplicates {sum(x['duplicates'] for x in g)}, surplus "
                f"{sum(x['surplus'] for x in g)}, gap/hand-over marks {sum(x['marks'] for x in g)}, verify failures "
                f"{sum(not x['verified'] for x in g)}, session rows disagreeing with the archive "
                f"{sum(x['row_events'] != x['rows'] for x in g)}; ended {dict(Counter(x['end_reason'] for x in g))}; "
                f"marks by type {dict(sum((x['mark_types'] for x in g), Counter()))}"
            )
            d = [delay[c] for c in group]
            report.line(
                f"(b) {label}: attach delay (call created -> sideband open) p50 {pct(d, 50):.0f} ms, "
                f"p95 {pct(d, 95):.0f} ms, max {max(d):.0f} ms"
            )
        stats = http().get(f"{emu_url}/_emulator/stats", timeout=30).json()
        report.line(
            f"emulator: {stats['sideband_connections']} sideband connections for {len(calls) + 2} calls "
            f"(2 warm-up), {stats['client_secrets']} client secrets minted; script requests {dict(scripts)}"
        )
        lines = host.logs.splitlines()
        trouble = Counter(shape(line) for line in lines if is_trouble(line))
        report.line(f"host log: {sum(trouble.values())} warning/error lines of {len(lines)}")
        for text, n in trouble.most_common(10):
            report.line(f"  x{n} {text[:300]}")

        lv = [checks[c] for c in live]
        lost = sum(x["missing"] + x["surplus"] + x["duplicates"] + x["marks"] for x in lv)
        failures = sum(not x["verified"] for x in lv)
        script_errors = sum(n for status, n in scripts.items() if status != 200)
        report.target(
            f"{args.live} live calls: every event archived",
            len(live) == args.live and lost == 0 and failures == 0 and script_errors == 0,
            f"{len(live)} calls, {sum(x['events'] for x in lv)} of {sum(x['emitted'] for x in lv)} events archived, "
            f"{sum(x['missing'] for x in lv)} missing, {sum(x['duplicates'] for x in lv)} duplicates, "
            f"{failures} verify failures; attach p50 {pct([delay[c] for c in live], 50):.0f} ms, "
            f"p95 {pct([delay[c] for c in live], 95):.0f} ms",
        )
    finally:
        report.save()  # what was measured, even when a later phase failed
        background.shutdown(wait=False, cancel_futures=True)
        if host:
            host.stop()
        if emu:
            emu.terminate()
            emu.wait(10)
        if az:
            az.stop()
        if burst:
            burst.gate.abort()  # callers still at the gate (Ctrl-C during the burst) leave at once
            burst.close()


if __name__ == "__main__":
    main()
