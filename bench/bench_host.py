"""The local functions host's own cost per HTTP request: the fixture app's `hello` route through
`python -m local.host` against a bare aiohttp server answering the same JSON, alternated in one run.

    .venv/bin/python -m bench.bench_host [--n 400]

Starts its own Azurite and host on free ports; prints medians and the ratio.
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from pathlib import Path

import requests
from aiohttp import web

from bench.common import Report, median
from local.azurite import start_azurite
from local.processes import free_port, wait_for_port
from local.testing.host_process import FIXTURE_APP, HostProcess, fixture_settings


def bare_server(port: int) -> None:
    async def hello(req: web.Request) -> web.Response:
        return web.json_response(
            {
                "name": req.match_info["name"],
                "q": req.query.get("q"),
                "method": req.method,
                "url": str(req.url),
                "agent": req.headers.get("x-test"),
            }
        )

    app = web.Application()
    app.router.add_get("/api/hello/{name}", hello)
    threading.Thread(
        target=web.run_app,
        args=(app,),
        daemon=True,
        kwargs={"host": "127.0.0.1", "port": port, "print": None, "handle_signals": False},
    ).start()
    wait_for_port(port)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=400, help="timed requests per server")
    args = ap.parse_args()
    azurite = start_azurite()
    tmp = Path(tempfile.mkdtemp(prefix="bench_host_"))
    host = None
    try:
        host = HostProcess(FIXTURE_APP, fixture_settings(azurite, tmp))  # FUNCTIONS_KEYS: generated
        port = free_port()
        bare_server(port)
        urls = {"host": host.url + "/api/hello/x?q=1", "bare": f"http://127.0.0.1:{port}/api/hello/x?q=1"}
        sessions = {name: requests.Session() for name in urls}
        times: dict[str, list[float]] = {name: [] for name in urls}
        for i in range(30 + args.n):
            for name in ("host", "bare") if i % 2 == 0 else ("bare", "host"):  # drift hits both
                t = time.perf_counter()
                assert sessions[name].get(urls[name], timeout=10).status_code == 200
                if i >= 30:
                    times[name].append((time.perf_counter() - t) * 1000)
    finally:
        if host:
            host.stop()
        azurite.stop()
    report = Report("host")
    report.line(f"requests per server: {args.n} (after 30 warm-up)")
    report.compare("local host vs bare aiohttp, GET /api/hello", times["host"], times["bare"])
    mh, mb = median(times["host"]), median(times["bare"])
    report.line(f"host overhead: {mh - mb:.2f} ms per request (median)")
    report.save()


if __name__ == "__main__":
    main()
