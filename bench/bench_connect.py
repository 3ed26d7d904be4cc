"""POST /api/connect through the local functions host against its floor, side by side in one run.

    .venv/bin/python -m bench.bench_connect [--n 20] [--latency 0 250] [--concurrency 1 8 32]

The floor is what no gateway can beat: one SDP post to the emulator with a client secret already
in hand (minted beforehand, untimed). /api/connect does that post too, plus whatever else sits on
its path (with the secret pool warm, nothing upstream). Each upstream request of the emulator is
delayed by --latency ms (Azure's client_secrets and calls take about 250 ms), paths alternate so
drift hits both, and each concurrency level runs that many callers at once.

Starts its own emulator, Azurite and host on free ports. The listener function is disabled
(`AzureWebJobs.call_listener.Disabled`) so sideband work does not share the 2 cores with the timed
requests. Also counts the identity endpoint's hits: the gateway should ask once per token lifetime.
"""

from __future__ import annotations

import argparse
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import requests

from bench.common import Report, Upstream, median, pyplot
from local.azurite import start_azurite
from local.emulator import Emulator
from local.processes import free_port
from local.testing.host_process import ROOT, HostProcess, gateway_settings
from local.testing.offer import OfferPeer

REPORT_ARGS: list[str] = []
LONG_ARGS = ["--n", "60"]


class Paths:
    def __init__(self, emu: Emulator, host_url: str, offer: str) -> None:
        self.emu, self.host_url, self.offer = emu, host_url, offer
        self.upstream = Upstream(emu.url, emu.identity_endpoint, emu.identity_header)
        self.base = self.upstream.base
        self.local = threading.local()

    @property
    def http(self) -> requests.Session:
        if not hasattr(self.local, "s"):
            self.local.s = requests.Session()
        return self.local.s

    def floor(self, secret: str) -> tuple[float, str]:
        t = time.perf_counter()
        r = self.http.post(
            f"{self.base}/calls?webrtcfilter=on",
            data=self.offer.encode(),
            timeout=60,
            headers={"Authorization": f"Bearer {secret}", "Content-Type": "application/sdp"},
        )
        elapsed = (time.perf_counter() - t) * 1000
        assert r.status_code == 201, r.status_code
        return elapsed, r.headers["Location"].rstrip("/").rsplit("/", 1)[-1]

    def gateway(self) -> tuple[float, str]:
        t = time.perf_counter()
        r = self.http.post(
            f"{self.host_url}/api/connect",
            data=self.offer.encode(),
            timeout=60,
            headers={"Content-Type": "application/sdp"},
        )
        elapsed = (time.perf_counter() - t) * 1000
        assert r.status_code == 201, (r.status_code, r.text)
        return elapsed, r.headers["x-call-id"]

    def one(self, which: str) -> float:
        if which == "floor":
            elapsed, call_id = self.floor(self.upstream.held_secret())
        else:
            elapsed, call_id = self.gateway()
        self.upstream.hangup(call_id)  # untimed: keeps the emulator from piling up live calls
        return elapsed


def measure(paths: Paths, n: int, callers: int) -> tuple[list[float], list[float]]:
    """n timed calls per path (at least one round), `callers` at once, paths alternating by round."""
    floor: list[float] = []
    gateway: list[float] = []
    rounds = max(1, n // callers)
    with ThreadPoolExecutor(callers) as pool:
        for i in range(rounds):
            for which in ("floor", "gateway") if i % 2 == 0 else ("gateway", "floor"):
                out = floor if which == "floor" else gateway
                out.extend(pool.map(lambda _, w=which: paths.one(w), range(callers)))
                time.sleep(0.3)  # let the pool refill between rounds, as between people
    return gateway, floor


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=20, help="timed calls per path and setting (at least one round)")
    ap.add_argument("--latency", type=int, nargs="+", default=[0, 250], help="ms added to each upstream request")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    args = ap.parse_args()
    report = Report("connect")
    emu = Emulator(port=0).start()
    azurite = start_azurite()
    host = None
    results: dict[tuple[int, int], float] = {}
    try:
        port = free_port()
        # As infra deploys it: 24 worker threads for the HTTP functions (the local host's default is cores + 4);
        # the limiter stays on (its cost is part of /api/connect) but never refuses the benchmark's clients.
        settings = gateway_settings(
            emu,
            azurite,
            port,
            PYTHON_THREADPOOL_THREAD_COUNT="24",
            RATE_LIMIT_PER_MINUTE=10**5,
            MAX_ACTIVE_CALLS=500,
            **{"AzureWebJobs.call_listener.Disabled": "true"},
        )
        host = HostProcess(ROOT, settings, port=port)
        with OfferPeer() as peer:
            paths = Paths(emu, host.url, peer.offer)
        for _ in range(3):  # warm: imports, the token, the pool's first fill
            paths.one("gateway")
            time.sleep(0.5)
        for latency in args.latency:
            emu.clear_faults()
            if latency:
                for target in ("client_secrets", "calls"):
                    emu.set_fault(target, delay=latency / 1000, times=0)
            for callers in args.concurrency:
                gateway, floor = measure(paths, args.n, callers)
                label = f"{latency} ms upstream, {callers} caller{'s' if callers > 1 else ''}"
                results[(latency, callers)] = report.compare(f"/api/connect vs floor, {label}", gateway, floor)
        emu.clear_faults()
        stats = emu.stats()
    finally:
        if host:
            host.stop()
        azurite.stop()
        emu.stop()
    # The bench fetched one token itself; every other hit is the gateway's.
    gateway_hits = stats["identity_tokens"] - 1
    report.line(f"identity endpoint: {gateway_hits} hit(s) from the gateway over {stats['calls']} calls")
    report.target("identity asked once per token lifetime", gateway_hits == 1, f"{gateway_hits} hit(s)")
    key = (250, 1)
    if key in results:
        report.target(
            "/api/connect within 1.15x of the floor at 250 ms upstream (median, warm, sequential)",
            results[key] <= 1.15,
            f"{results[key]:.2f}x",
        )
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for latency in args.latency:
        xs = [c for c in args.concurrency if (latency, c) in results]
        ax.plot(xs, [results[(latency, c)] for c in xs], marker="o", label=f"{latency} ms upstream")
    ax.axhline(1.15, color="grey", linestyle="--", label="target 1.15x")
    ax.set_xscale("log", base=2)
    ax.set_xticks(args.concurrency, [str(c) for c in args.concurrency])
    ax.set_xlabel("concurrent callers")
    ax.set_ylabel("median /api/connect ÷ floor")
    ax.legend()
    report.chart("ratio", fig)
    report.line(f"medians of the ratios: {median(list(results.values())):.2f}x over {len(results)} settings")
    report.save()


if __name__ == "__main__":
    main()
