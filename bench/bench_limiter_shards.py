"""The sharded active-call slots on POST /api/connect under concurrency: limiter on vs off side by
side in one run, and a burst on one host vs two hosts sharing one limits table.

    .venv/bin/python -m bench.bench_limiter_shards [--rounds 6] [--concurrency 8 32] [--burst 200] [--quick]

Each upstream request of the emulator (client_secrets, calls) is delayed --latency ms (250: about
Azure's). Azurite, the emulator and every host are processes of their own; the listener function is
disabled (`AzureWebJobs.call_listener.Disabled`) and every call is ended untimed through the
emulator's admin route, so the emulator does not accumulate live calls.

  a. Two hosts, alternating by round, `--concurrency` callers at once for --rounds rounds each:
     "off" (RATE_LIMIT_PER_MINUTE=0, MAX_ACTIVE_CALLS=0, DAILY_SPEND_LIMIT_USD=0) and "on"
     (MAX_ACTIVE_CALLS=2000 over LIMIT_SLOT_SHARDS=16, DAILY_SPEND_LIMIT_USD=20; the rate stays 0:
     every caller is 127.0.0.1, one client). The ratio of the medians on/off is the limiter's cost
     at that concurrency; the floor here is the same gateway with the limiter off (bench_connect's
     floor is a bare SDP post, so its ratios are not these). Between rounds the callers wait
     --pause s, so each round starts with the secret pool refilled, on both sides alike.
  b. --burst callers released together (one barrier), each on its own connection: on the "off"
     host (reference), on one fresh "on" host, and split evenly over two fresh "on" hosts that share
     one limits table (ETag races between processes). Statuses (admitted / refused by code), p50/p95,
     and the slots left in the table afterwards, which should be exactly the calls admitted.

Slots are never released here (no listener): they expire CALL_SLOT_ATTACH_SECONDS (120) after they
were taken, and the spend bound counts each as a running call at PRICE_RUNNING_CALL_PER_MINUTE
($0.10): $20 is 200 call-minutes, so the "on" host of (a) takes at most MAX_ON_CALLS calls.
"""

from __future__ import annotations

import argparse
import json
import re
import secrets
import signal
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import requests
from azure.data.tables import TableClient

from bench.common import Report, emulator_process, median, pct, pyplot
from local.azurite import start_azurite
from local.processes import free_port
from local.testing.host_process import ROOT, HostProcess, gateway_settings
from local.testing.offer import OfferPeer

REPORT_ARGS: list[str] = []  # `make bench`: the defaults, about 90 s on 2 cores
TIMEOUT = 400
TARGET_RATIO = 1.2
MAX_ON_CALLS = 400  # (a)'s "on" host: far from the $20 running-call reserve over the run (see above)

COMMON = {
    "AzureWebJobs.call_listener.Disabled": "true",
    "PYTHON_THREADPOOL_THREAD_COUNT": "24",  # as infra deploys it (main.bicep)
    "CONTROL_RATE_PER_MINUTE": 0,  # hang-up and call-state routes only: not on this path, off on both sides
}
OFF = {"RATE_LIMIT_PER_MINUTE": 0, "MAX_ACTIVE_CALLS": 0, "DAILY_SPEND_LIMIT_USD": 0}
ON = {"RATE_LIMIT_PER_MINUTE": 0, "MAX_ACTIVE_CALLS": 2000, "LIMIT_SLOT_SHARDS": 16, "DAILY_SPEND_LIMIT_USD": 20}
HANDLER = re.compile(r"POST connect -> (\d+) rid=\S+ (\d+) ms$")

_local = threading.local()


def http() -> requests.Session:
    """One session per thread (a Session is not meant to be shared between threads)."""
    if not hasattr(_local, "s"):
        _local.s = requests.Session()
    return _local.s


def connect(url: str, offer: str, session: requests.Session | None = None) -> dict[str, Any]:
    """One POST /api/connect: status, wall ms, the call id (201) or the error code."""
    t = time.perf_counter()
    try:
        r = (session or http()).post(
            f"{url}/api/connect", data=offer.encode(), timeout=120, headers={"Content-Type": "application/sdp"}
        )
    except requests.RequestException as exc:
        return {"status": type(exc).__name__, "ms": (time.perf_counter() - t) * 1000}
    out: dict[str, Any] = {"status": r.status_code, "ms": (time.perf_counter() - t) * 1000}
    if r.status_code == 201:
        out["call_id"] = r.headers.get("x-call-id")
    else:
        try:
            out["code"] = json.loads(r.text)["error"]["code"]
        except (ValueError, KeyError, TypeError):
            out["code"] = r.text[:120]
    return out


class Stack:
    """The emulator (its own process) as gateway_settings wants it, plus its admin routes."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.identity_endpoint = url + "/msi/token"
        self.identity_header = "local-identity-header"

    def latency(self, ms: int) -> None:
        http().delete(f"{self.url}/_emulator/faults", timeout=10).raise_for_status()
        for target in ("client_secrets", "calls"):
            if ms:
                body = {"target": target, "delay": ms / 1000, "times": 0}
                http().post(f"{self.url}/_emulator/faults", json=body, timeout=10).raise_for_status()

    def end(self, call_id: str) -> None:  # as if the browser left; untimed
        http().post(f"{self.url}/_emulator/calls/{call_id}/end", timeout=30)


def handler_ms(host: HostProcess, since: int) -> list[float]:
    """The handler times the host logged for its 201s from log line `since` on (whole ms)."""
    out = []
    for line in host.logs.splitlines()[since:]:
        m = HANDLER.search(line)
        if m and m.group(1) == "201":
            out.append(float(m.group(2)))
    return out


def warm(hosts: list[HostProcess], stack: Stack, offer: str, n: int = 3) -> int:
    """Imports, the identity token, the secret pool's first fill and the limits table's first rows
    are not what is measured; returns the calls made (each holds a slot on an "on" host)."""
    for host in hosts:
        for _ in range(n):
            r = connect(host.url, offer)
            if r["status"] != 201:
                raise RuntimeError(f"warm-up connect on {host.url}: {r}")
            stack.end(r["call_id"])
            time.sleep(0.2)
    time.sleep(2.0)  # the pools refill, as between visitors
    return n


def side_by_side(
    hosts: dict[str, HostProcess], stack: Stack, offer: str, callers: int, rounds: int, pause: float
) -> dict[str, list[float]]:
    """`rounds` rounds per host of `callers` POST /api/connect at once, hosts alternating (and their
    order alternating) so drift hits both; each round's calls end untimed before the pause."""
    times: dict[str, list[float]] = {name: [] for name in hosts}
    names = list(hosts)
    with ThreadPoolExecutor(callers) as pool:
        for i in range(rounds):
            for name in names if i % 2 == 0 else names[::-1]:
                url = hosts[name].url
                results = list(pool.map(lambda _, u=url: connect(u, offer), range(callers)))
                bad = [r for r in results if r["status"] != 201]
                if bad:
                    raise RuntimeError(f"{name}, {callers} callers: {len(bad)} not 201, e.g. {bad[0]}")
                times[name].extend(r["ms"] for r in results)
                list(pool.map(stack.end, [r["call_id"] for r in results]))
                time.sleep(pause)
    return times


def burst(urls: list[str], n: int, offer: str) -> list[dict[str, Any]]:
    """`n` callers released together by a barrier, each on a new connection, spread evenly over
    `urls` (as a load balancer would)."""
    gate = threading.Barrier(n, timeout=120)

    def one(i: int) -> dict[str, Any]:
        session = requests.Session()  # its own connection, as separate browsers
        try:
            gate.wait()
            return connect(urls[i % len(urls)], offer, session)
        finally:
            session.close()

    pool = ThreadPoolExecutor(n)
    try:
        return list(pool.map(one, range(n)))
    finally:
        gate.abort()  # callers still at the gate (an error, Ctrl-C) leave at once
        pool.shutdown(wait=False, cancel_futures=True)


def slots_in_table(connection_string: str, table: str) -> list[int]:
    """Live slots per shard row of a limits table (the JSON {slot id: [expires, ...]} of each)."""
    now = time.time()
    client = TableClient.from_connection_string(connection_string, table)
    counts = []
    for row in client.query_entities("PartitionKey eq 'slots'"):
        slots = json.loads(row.get("slots") or "{}")
        counts.append(sum(1 for v in slots.values() if isinstance(v, list) and v and v[0] > now))
    return counts


def describe(results: list[dict[str, Any]]) -> tuple[int, Counter[str], list[float]]:
    """Admitted, refused by status and code, and every caller's wall ms."""
    admitted = sum(r["status"] == 201 for r in results)
    refused = Counter(f"{r['status']} {r.get('code', '')}".strip() for r in results if r["status"] != 201)
    return admitted, refused, [r["ms"] for r in results]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=6, help="rounds per host and concurrency in (a)")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[8, 32], help="callers at once in (a)")
    ap.add_argument("--burst", type=int, default=200, help="concurrent callers in (b); 0 skips it")
    ap.add_argument("--latency", type=int, default=250, help="ms added to each upstream request")
    ap.add_argument("--pause", type=float, default=0.8, help="s between rounds: the secret pool refills")
    ap.add_argument("--quick", action="store_true", help="smoke run: 2 rounds, a burst of 40")
    args = ap.parse_args()
    if args.quick:
        args.rounds, args.burst = 2, min(args.burst, 40)
    on_calls = args.rounds * sum(args.concurrency) + 3
    if args.rounds < 1 or on_calls > MAX_ON_CALLS:
        ap.error(
            f"(a) would make {on_calls} calls on the 'on' host: keep rounds x sum(concurrency) under {MAX_ON_CALLS}"
        )
    if not 0 <= args.burst <= 1000:
        ap.error("--burst: 0 to 1000 (the cap is 2000, the spend reserve $20)")
    # run_all stops a bench with SIGTERM, a closed terminal sends SIGHUP: stop the stack either way
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda signum, _: sys.exit(128 + signum))

    report = Report("limiter_shards")
    az = emu = None
    hosts: dict[str, HostProcess] = {}
    ratios: dict[int, float] = {}
    medians: dict[int, dict[str, float]] = {}
    bursts: dict[str, dict[str, Any]] = {}
    ready: list[float] = []  # each host's start-up seconds
    started = time.monotonic()

    def start_host(name: str, **extra: Any) -> HostProcess:
        port = free_port()
        hosts[name] = HostProcess(ROOT, gateway_settings(stack, az, port, **{**COMMON, **extra}), port=port)
        ready.append(hosts[name].startup_seconds)
        return hosts[name]

    def stop_host(name: str) -> None:
        hosts.pop(name).stop()

    try:
        az = start_azurite()
        emu, emu_url = emulator_process()
        stack = Stack(emu_url)
        with OfferPeer() as peer:
            offer = peer.offer
        stack.latency(args.latency)
        report.line(
            f"emulator upstream latency {args.latency} ms (client_secrets and calls); listener disabled; "
            "calls ended untimed through the emulator's admin route; PYTHON_THREADPOOL_THREAD_COUNT 24 as deployed"
        )
        report.line(
            "limiter off: RATE_LIMIT_PER_MINUTE=0 MAX_ACTIVE_CALLS=0 DAILY_SPEND_LIMIT_USD=0; limiter on: "
            "RATE_LIMIT_PER_MINUTE=0 (one client address) MAX_ACTIVE_CALLS=2000 LIMIT_SLOT_SHARDS=16 "
            "DAILY_SPEND_LIMIT_USD=20; CONTROL_RATE_PER_MINUTE=0 on both"
        )

        # (a) limiter on vs off, side by side, alternating by round
        pair = {"off": start_host("off", **OFF), "on": start_host("on", **ON)}
        warm(list(pair.values()), stack, offer)
        phase = time.monotonic()
        for callers in args.concurrency:
            since = {name: len(h.logs.splitlines()) for name, h in pair.items()}
            times = side_by_side(pair, stack, offer, callers, args.rounds, args.pause)
            inside = {name: handler_ms(h, since[name]) for name, h in pair.items()}
            label = (
                f"/api/connect limiter on vs off, {args.latency} ms upstream, {callers} callers ({args.rounds} rounds)"
            )
            ratios[callers] = report.compare(label, times["on"], times["off"])
            medians[callers] = {name: median(xs) for name, xs in times.items()}
            report.line(
                f"  inside the handler (host log, whole ms): median {median(inside['on']):.0f} vs "
                f"{median(inside['off']):.0f} ms, p95 {pct(inside['on'], 95):.0f} vs {pct(inside['off'], 95):.0f} ms"
            )
        refusals = pair["on"].logs.count("limit refused") + pair["on"].logs.count("not checked")
        report.line(
            f"(a) limiter refusals or unchecked limits on the 'on' host: {refusals}; (a) took "
            f"{time.monotonic() - phase:.0f} s"
        )
        stop_host("on")  # (b) gets fresh tables; the 'off' host stays as the burst's reference

        # (b) a burst: the 'off' host, one fresh 'on' host, two fresh 'on' hosts sharing one table
        if args.burst:
            one_table, two_table = (f"benchshards{secrets.token_hex(4)}" for _ in range(2))
            one = start_host("burst-1", **ON, LIMITS_TABLE=one_table)
            two = [start_host(f"burst-2{x}", **ON, LIMITS_TABLE=two_table) for x in "ab"]
            warmed = warm([one, *two], stack, offer)
            phase = time.monotonic()
            configs: list[tuple[str, list[HostProcess], str | None, int]] = [
                ("1 host, limiter off (reference)", [hosts["off"]], None, 0),
                ("1 host, limiter on", [one], one_table, warmed),
                ("2 hosts, limiter on, one limits table", two, two_table, 2 * warmed),
            ]
            for label, group, table, warm_slots in configs:
                since = {h.url: len(h.logs.splitlines()) for h in group}
                t = time.monotonic()
                results = burst([h.url for h in group], args.burst, offer)
                wall = time.monotonic() - t
                admitted, refused, ms = describe(results)
                with ThreadPoolExecutor(16) as pool:  # untimed
                    list(pool.map(stack.end, [r["call_id"] for r in results if r.get("call_id")]))
                in_handler = [x for h in group for x in handler_ms(h, since[h.url])]
                line = (
                    f"(b) {args.burst} at once, {label}: admitted {admitted}, refused {sum(refused.values())}"
                    + (f" ({', '.join(f'{k} x{n}' for k, n in sorted(refused.items()))})" if refused else "")
                    + f"; p50 {pct(ms, 50):.0f} ms, p95 {pct(ms, 95):.0f} ms, max {max(ms):.0f} ms, "
                    f"all answered in {wall:.1f} s; in the handler p50 {pct(in_handler, 50):.0f} ms, p95 {pct(in_handler, 95):.0f} ms"
                )
                held = None
                if table is not None:
                    shards = slots_in_table(az.connection_string, table)
                    held = sum(shards) - warm_slots
                    line += (
                        f"; slots taken in the table {held} (admitted {admitted}) over {len(shards)} shard rows, "
                        f"{min(shards, default=0)}-{max(shards, default=0)} a row"
                    )
                    lost = sum(h.logs.count("not checked") for h in group)
                    if lost:
                        line += f"; {lost} limit checks failed for storage (host log)"
                report.line(line)
                bursts[label] = {
                    "admitted": admitted,
                    "refused": sum(refused.values()),
                    "p50": pct(ms, 50),
                    "p95": pct(ms, 95),
                    "held": held,
                }
                time.sleep(3.0)  # the pools refill and the ended calls leave the emulator
            report.line(f"(b) took {time.monotonic() - phase:.0f} s")
        stats = http().get(f"{emu_url}/_emulator/stats", timeout=30).json()
        report.line(
            f"emulator: {stats.get('calls')} calls, {stats.get('client_secrets')} client secrets minted, "
            f"{stats.get('active_calls')} still live at the end"
        )
    except BaseException as exc:
        report.line(f"stopped: {type(exc).__name__}: {exc}")
        report.save()  # what was measured before it stopped
        raise
    finally:
        report.line(
            f"run time {time.monotonic() - started:.0f} s; hosts ready in {', '.join(f'{s:.1f}' for s in ready)} s"
        )
        for name in list(hosts):
            stop_host(name)
        if emu:
            emu.terminate()
            emu.wait(10)
        if az:
            az.stop()

    for callers, ratio in ratios.items():
        m = medians[callers]
        report.target(
            f"/api/connect with the limiter on (16 slot shards, $20 spend bound) within {TARGET_RATIO}x of the "
            f"floor (limiter off), {callers} concurrent callers, {args.latency} ms upstream (median)",
            ratio <= TARGET_RATIO,
            f"{ratio:.2f}x ({m['on']:.1f} vs {m['off']:.1f} ms)",
        )
    on_bursts = {k: v for k, v in bursts.items() if v["held"] is not None}
    if on_bursts:
        report.target(
            f"{args.burst} concurrent /api/connect under MAX_ACTIVE_CALLS=2000: all admitted, one slot each "
            "(1 host and 2 hosts sharing one limits table)",
            all(v["refused"] == 0 and v["held"] == v["admitted"] == args.burst for v in on_bursts.values()),
            "; ".join(
                f"{k}: {v['admitted']}/{args.burst} admitted, {v['held']} slots, p50 {v['p50']:.0f} ms, p95 {v['p95']:.0f} ms"
                for k, v in on_bursts.items()
            ),
        )

    plt = pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.5))
    xs = list(ratios)
    left.bar([i - 0.2 for i in range(len(xs))], [medians[c]["off"] for c in xs], 0.4, label="limiter off")
    left.bar([i + 0.2 for i in range(len(xs))], [medians[c]["on"] for c in xs], 0.4, label="limiter on (16 shards)")
    left.set_xticks(range(len(xs)), [f"{c} callers\n{ratios[c]:.2f}x" for c in xs])
    left.set_ylabel(f"median ms, {args.latency} ms upstream")
    left.legend(fontsize=8)
    names = list(bursts)
    right.bar([i - 0.2 for i in range(len(names))], [bursts[k]["p50"] for k in names], 0.4, label="p50")
    right.bar([i + 0.2 for i in range(len(names))], [bursts[k]["p95"] for k in names], 0.4, label="p95")
    right.set_xticks(range(len(names)), [k.replace(", ", "\n") for k in names], fontsize=7)
    right.set_ylabel(f"ms, burst of {args.burst}")
    right.legend(fontsize=8)
    report.chart("latency", fig)
    report.save()


if __name__ == "__main__":
    main()
