"""`python -m local.host --script-root DIR [--port N] [--static DIR] [--cors ORIGINS]`.

LOCAL_HOST_TRACEMALLOC and LOCAL_HOST_MEMSTATS turn on the memory probes (memory_probes.py)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from . import memory_probes


class UtcFormatter(logging.Formatter):
    def format(self, record):
        ts = datetime.fromtimestamp(record.created, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3]
        return f"[{ts}Z] {record.getMessage()}" + (
            "\n" + self.formatException(record.exc_info) if record.exc_info else ""
        )


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m local.host", description=__doc__)
    p.add_argument("--script-root", default=".", type=Path)
    p.add_argument("--port", type=int, default=int(os.environ.get("FUNCTIONS_PORT", "7071")))
    p.add_argument("--host", default=os.environ.get("FUNCTIONS_HOST", "127.0.0.1"))
    p.add_argument("--static", type=Path, help="folder served at / (index.html)")
    p.add_argument(
        "--cors",
        default=os.environ.get("HOST_CORS", ""),
        help="comma-separated origins the host answers CORS for (Host.CORS of func start)",
    )
    p.add_argument("--cors-credentials", action="store_true")
    args = p.parse_args(argv)
    memory_probes.start()

    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(UtcFormatter())
    logging.basicConfig(level=logging.INFO, handlers=[handler])
    logging.getLogger("azure").setLevel(logging.WARNING)  # the SDK logs every request at INFO
    return asyncio.run(_run(args))


async def _run(args) -> int:
    from .local_host import LocalHost

    started = time.monotonic()
    cors = tuple(o.strip().rstrip("/") for o in args.cors.split(",") if o.strip())
    try:
        host = LocalHost(
            args.script_root, static_dir=args.static, cors_origins=cors, cors_credentials=args.cors_credentials
        )
    except Exception as exc:  # the app's import error, a missing setting, an unsupported binding
        logging.getLogger("host").exception("Host start-up failed: %s", exc)
        return 1
    url = await host.start(args.host, args.port)
    logging.getLogger("host").info("Host started (%dms)", (time.monotonic() - started) * 1000)
    print(f"ready: gateway {url}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    memory_probes.install(loop)
    await stop.wait()
    logging.getLogger("host").info("Stopping the host")
    try:
        await asyncio.wait_for(host.stop(), 10)
    finally:
        sys.stdout.flush()
        # A sync handler still running in a worker thread would hold the interpreter open.
        os._exit(0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
