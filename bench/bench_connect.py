"""Added latency of POST /api/connect through the local functions host over calling the emulator
directly (client_secrets + calls with a cached Entra token), measured side by side in one run.

    .venv/bin/python -m bench.bench_connect [--n 40] [--with-listener]

Starts its own emulator, Azurite and host on free ports; prints medians, p90 and ratios.
By default the listener function is disabled (`AzureWebJobs.call_listener.Disabled`), so the queue
trigger's sideband work does not share the 2 cores with the timed requests (--with-listener keeps it).
"""

from __future__ import annotations

import argparse
import statistics
import time

import requests

from local.azurite import start_azurite
from local.emulator import Emulator
from local.processes import free_port
from local.testing.host import ROOT, HostProcess, gateway_settings
from local.testing.offer import OfferPeer


def direct_connect(session: requests.Session, emu: Emulator, entra: str, offer: str) -> str:
    """What the gateway does upstream, done by a client that already holds a bearer token."""
    base = f"{emu.url}/openai/v1/realtime"
    r = session.post(
        f"{base}/client_secrets",
        timeout=20,
        headers={"Authorization": f"Bearer {entra}"},
        json={
            "expires_after": {"anchor": "created_at", "seconds": 600},
            "session": {
                "type": "realtime",
                "model": "gpt-realtime",
                "instructions": "You are a helpful assistant.",
                "audio": {"output": {"voice": "marin"}},
            },
        },
    )
    r.raise_for_status()
    r = session.post(
        f"{base}/calls?webrtcfilter=on",
        data=offer.encode(),
        timeout=20,
        headers={"Authorization": f"Bearer {r.json()['value']}", "Content-Type": "application/sdp"},
    )
    assert r.status_code == 201, r.status_code
    return r.headers["Location"].rstrip("/").rsplit("/", 1)[-1]


def gateway_connect(session: requests.Session, url: str, offer: str) -> str:
    r = session.post(f"{url}/api/connect", data=offer.encode(), timeout=30, headers={"Content-Type": "application/sdp"})
    assert r.status_code == 201, (r.status_code, r.text)
    return r.headers["x-call-id"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=40, help="timed calls per path")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--with-listener", action="store_true")
    args = ap.parse_args()

    emu = Emulator(port=0).start()
    azurite = start_azurite()
    host = None
    try:
        port = free_port()
        listener_off = {} if args.with_listener else {"AzureWebJobs.call_listener.Disabled": "true"}
        # the limiter stays on (its cost is part of /api/connect) but never refuses the benchmark's client
        unlimited = {"RATE_LIMIT_PER_MINUTE": 10**5, "MAX_ACTIVE_CALLS": 500}
        host = HostProcess(ROOT, gateway_settings(emu, azurite, port, **listener_off, **unlimited), port=port)
        entra = requests.get(
            emu.identity_endpoint,
            timeout=10,
            headers={"X-IDENTITY-HEADER": emu.identity_header},
            params={"api-version": "2019-08-01", "resource": "https://cognitiveservices.azure.com"},
        ).json()["access_token"]
        with OfferPeer() as peer:
            offer = peer.offer
        direct_s, gateway_s = requests.Session(), requests.Session()
        hang = requests.Session()

        def hangup(call_id: str) -> None:  # untimed: keep the emulator from piling up live calls
            hang.post(
                f"{emu.url}/openai/v1/realtime/calls/{call_id}/hangup",
                timeout=10,
                headers={"Authorization": f"Bearer {entra}"},
            )

        direct, via = [], []
        for i in range(args.warmup + args.n):
            # Alternate which path goes first so drift (GC, other tenants of the CPU) hits both.
            order = ("d", "g") if i % 2 == 0 else ("g", "d")
            for which in order:
                t = time.perf_counter()
                call_id = (
                    direct_connect(direct_s, emu, entra, offer)
                    if which == "d"
                    else gateway_connect(gateway_s, host.url, offer)
                )
                elapsed = (time.perf_counter() - t) * 1000
                hangup(call_id)
                if i >= args.warmup:
                    (direct if which == "d" else via).append(elapsed)
        stats = emu.stats()
        # The handler's own time as the gateway logs it (request in -> response out, in process).
        handler_ms = [
            float(line.rsplit(" ", 2)[-2]) for line in host.logs.splitlines() if "POST connect -> 201" in line
        ][args.warmup :]
    finally:
        if host:
            host.stop()
        azurite.stop()
        emu.stop()

    def p90(xs):
        return statistics.quantiles(xs, n=10)[-1]

    md, mg = statistics.median(direct), statistics.median(via)
    print(
        f"calls per path: {args.n} (after {args.warmup} warm-up), listener "
        f"{'on' if args.with_listener else 'off'}; identity endpoint hits: {stats['identity_tokens']}"
    )
    print(f"direct to emulator (client_secrets + calls): median {md:7.1f} ms  p90 {p90(direct):7.1f} ms")
    print(f"through host /api/connect:                  median {mg:7.1f} ms  p90 {p90(via):7.1f} ms")
    if handler_ms:
        mh = statistics.median(handler_ms)
        print(
            f"  of which inside the gateway handler:      median {mh:7.1f} ms "
            f"(host transport and dispatch: {mg - mh:.1f} ms)"
        )
    print(
        f"added latency (median): {mg - md:.1f} ms; ratio gateway/direct: {mg / md:.2f}x "
        f"(p90 ratio {p90(via) / p90(direct):.2f}x)"
    )


if __name__ == "__main__":
    main()
