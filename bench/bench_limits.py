"""What the limiter costs on POST /api/connect: two local hosts side by side in one run, one with
every limit on (rate, active-call slots, daily budget: all checked, none refusing), one with all
off, the same offer alternately sent to each. The gateway's own handler time comes from its log.

    .venv/bin/python -m bench.bench_limits [--n 40]

Starts its own emulator, Azurite and hosts on free ports (listeners off); prints medians and the
added milliseconds.
"""

from __future__ import annotations

import argparse
import statistics

import requests

from bench.common import alternate_connects, side_by_side_hosts
from local.azurite import start_azurite
from local.emulator import Emulator
from local.testing.host_process import HostProcess

LISTENER_OFF = {"AzureWebJobs.call_listener.Disabled": "true"}
ON = {"RATE_LIMIT_PER_MINUTE": 10**5, "MAX_ACTIVE_CALLS": 500, "DAILY_TOKEN_BUDGET": 10**12}
OFF = {"RATE_LIMIT_PER_MINUTE": 0, "MAX_ACTIVE_CALLS": 0, "DAILY_TOKEN_BUDGET": 0}


def handler_ms(host: HostProcess, skip: int) -> list[float]:
    return [float(line.rsplit(" ", 2)[-2]) for line in host.logs.splitlines() if "POST connect -> 201" in line][skip:]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=40, help="timed calls per host (at most 480: the slots)")
    ap.add_argument("--warmup", type=int, default=3)
    args = ap.parse_args()

    emu = Emulator(port=0).start()
    azurite = start_azurite()
    try:
        variants = {name: {**LISTENER_OFF, **limits} for name, limits in (("on", ON), ("off", OFF))}
        with side_by_side_hosts(emu, azurite, variants) as (hosts, offer):
            # ending each call (untimed) keeps them from piling up in the slots
            wall = alternate_connects(
                hosts,
                offer,
                args.n,
                args.warmup,
                lambda name, call_id: requests.post(f"{emu.url}/_emulator/calls/{call_id}/end", timeout=10),
            )
            inside = {name: handler_ms(host, args.warmup) for name, host in hosts.items()}
    finally:
        azurite.stop()
        emu.stop()

    med = {name: statistics.median(xs) for name, xs in wall.items()}
    med_in = {name: statistics.median(xs) for name, xs in inside.items()}
    print(f"/api/connect, {args.n} calls per host after {args.warmup} warm-up, listeners off")
    for name in ("off", "on"):
        print(f"limiter {name:3}: median {med[name]:7.1f} ms end to end, {med_in[name]:7.1f} ms in the handler")
    print(
        f"added by the limiter (median): {med['on'] - med['off']:.1f} ms end to end, "
        f"{med_in['on'] - med_in['off']:.1f} ms in the handler; ratio {med['on'] / med['off']:.2f}x"
    )


if __name__ == "__main__":
    main()
