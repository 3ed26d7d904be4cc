"""What every benchmark reports through: medians, p95, side-by-side ratios, targets met or not,
and charts. Printed as it goes; with BENCH_RESULTS_DIR set (bench/run_all.py sets it), also kept
as `<bench>.json` (lines, targets, charts) for the report.

    report = Report("connect")
    report.compare("/api/connect vs floor, 250 ms upstream", gateway_ms, floor_ms)
    report.target("connect within 1.15x of the floor", ratio <= 1.15, f"{ratio:.2f}x")
    report.save()
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence

import requests

from local.processes import die_with_parent, free_port, wait_for_port
from local.testing.host_process import HostProcess, gateway_settings
from local.testing.offer import OfferPeer

ROOT = Path(__file__).resolve().parents[1]


def median(xs: Sequence[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def pct(xs: Sequence[float], p: float) -> float:
    """The p-th percentile (nearest rank), so p95 of 20 samples is the 19th, never interpolated."""
    if not xs:
        return float("nan")
    ordered = sorted(xs)
    rank = max(1, min(len(ordered), round(p / 100 * len(ordered) + 0.4999)))
    return ordered[rank - 1]


def p95(xs: Sequence[float]) -> float:
    return pct(xs, 95)


def summary(xs: Sequence[float], unit: str = "ms") -> str:
    return f"median {median(xs):.1f} {unit}, p95 {p95(xs):.1f} {unit}, max {max(xs, default=float('nan')):.1f} {unit} (n={len(xs)})"


class Report:
    def __init__(self, bench: str) -> None:
        self.bench = bench
        self.lines: list[str] = []
        self.targets: list[dict[str, Any]] = []
        self.charts: list[str] = []
        self.dir = Path(os.environ["BENCH_RESULTS_DIR"]) if os.environ.get("BENCH_RESULTS_DIR") else None

    def line(self, text: str) -> None:
        print(text, flush=True)
        self.lines.append(text)

    def figure(self, label: str, xs: Sequence[float], unit: str = "ms") -> None:
        self.line(f"{label}: {summary(xs, unit)}")

    def compare(self, label: str, measured: Sequence[float], floor: Sequence[float], unit: str = "ms") -> float:
        """Both series side by side and the ratio of their medians (returned) and p95s."""
        ratio = median(measured) / median(floor)
        self.line(
            f"{label}: median {median(measured):.1f} vs {median(floor):.1f} {unit} -> {ratio:.2f}x; "
            f"p95 {p95(measured):.1f} vs {p95(floor):.1f} {unit} -> {p95(measured) / p95(floor):.2f}x"
        )
        return ratio

    def target(self, name: str, met: bool, figure: str) -> bool:
        self.line(f"TARGET {'met' if met else 'NOT met'}: {name}: {figure}")
        self.targets.append({"target": name, "met": bool(met), "figure": figure})
        return met

    def chart(self, name: str, fig: Any) -> None:
        """Save a matplotlib figure as <bench>_<name>.png next to the report (only under run_all)."""
        if self.dir is None:
            return
        path = self.dir / f"{self.bench}_{name}.png"
        fig.savefig(path, dpi=90, bbox_inches="tight")
        self.charts.append(path.name)

    def save(self) -> None:
        if self.dir is None:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        data = {"bench": self.bench, "lines": self.lines, "targets": self.targets, "charts": self.charts}
        (self.dir / f"{self.bench}.json").write_text(json.dumps(data, indent=1), encoding="utf-8")


def pyplot() -> Any:
    """matplotlib without a display."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def emulator_process() -> tuple[subprocess.Popen, str]:
    """The emulator in a process of its own (its CPU apart from the measured one), on a free port."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "local.emulator"],
        cwd=ROOT,
        start_new_session=True,
        env={**os.environ, "EMULATOR_PORT": str(port)},
        stdout=subprocess.DEVNULL,
        preexec_fn=die_with_parent(),  # a killed bench leaves no emulator holding a port
    )
    try:
        wait_for_port(port)
    except BaseException:
        proc.terminate()
        proc.wait(10)
        raise
    return proc, f"http://127.0.0.1:{port}"


@contextmanager
def side_by_side_hosts(
    emu: Any, azurite: Any, variants: dict[str, dict[str, Any]]
) -> Iterator[tuple[dict[str, HostProcess], str]]:
    """This repo's app on one local host per variant of its settings, on one emulator and Azurite,
    and a real SDP offer for them: (hosts by variant name, offer). The hosts stop on the way out."""
    hosts: dict[str, HostProcess] = {}
    try:
        for name, extra in variants.items():
            port = free_port()
            hosts[name] = HostProcess(ROOT, gateway_settings(emu, azurite, port, **extra), port=port)
        with OfferPeer() as peer:
            offer = peer.offer
        yield hosts, offer
    finally:
        for host in hosts.values():
            host.stop()


def alternate_connects(
    hosts: dict[str, Any], offer: str, n: int, warmup: int, after: Any = None
) -> dict[str, list[float]]:
    """POST /api/connect to each host in turn, alternating the order so drift hits both; returns
    the timed milliseconds per host (warm-up dropped). `after(name, call_id)` runs untimed."""
    import time

    import requests

    sessions = {name: requests.Session() for name in hosts}
    times: dict[str, list[float]] = {name: [] for name in hosts}
    names = list(hosts)
    for i in range(warmup + n):
        for name in names if i % 2 == 0 else names[::-1]:
            t = time.perf_counter()
            r = sessions[name].post(
                f"{hosts[name].url}/api/connect",
                data=offer.encode(),
                timeout=30,
                headers={"Content-Type": "application/sdp"},
            )
            elapsed = (time.perf_counter() - t) * 1000
            assert r.status_code == 201, (r.status_code, r.text)
            if after is not None:
                after(name, r.headers["x-call-id"])
            if i >= warmup:
                times[name].append(elapsed)
    return times


SESSION = {"type": "realtime", "model": "gpt-realtime", "audio": {"output": {"voice": "marin"}}}


class Upstream:
    """A bench's own credentials on the emulator, as a client that already holds a key would have
    them (the floor of a side-by-side): an Entra token, client secrets minted untimed, hang-ups.
    Thread-safe: one HTTP session per thread."""

    def __init__(self, emulator_url: str, identity_endpoint: str, identity_header: str) -> None:
        self._local = threading.local()
        self.base = f"{emulator_url}/openai/v1/realtime"
        self.entra = self.http.get(
            identity_endpoint,
            timeout=10,
            headers={"X-IDENTITY-HEADER": identity_header},
            params={"api-version": "2019-08-01", "resource": "https://cognitiveservices.azure.com"},
        ).json()["access_token"]

    @property
    def http(self) -> requests.Session:
        if not hasattr(self._local, "s"):
            self._local.s = requests.Session()
        return self._local.s

    def held_secret(self) -> str:
        r = self.http.post(
            f"{self.base}/client_secrets",
            timeout=30,
            headers={"Authorization": f"Bearer {self.entra}"},
            json={"expires_after": {"anchor": "created_at", "seconds": 600}, "session": SESSION},
        )
        r.raise_for_status()
        return r.json()["value"]

    def hangup(self, call_id: str) -> int:
        r = self.http.post(
            f"{self.base}/calls/{call_id}/hangup", timeout=30, headers={"Authorization": f"Bearer {self.entra}"}
        )
        return r.status_code
