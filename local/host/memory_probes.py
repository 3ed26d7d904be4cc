"""The host's memory probes, for a benchmark that asks where a long run's memory went.

- LOCAL_HOST_TRACEMALLOC=DIR: trace Python allocations (1 frame, to keep the cost down) and write a
  snapshot `DIR/host-<n>.tracemalloc` on each SIGUSR1 (bench_listeners --tracemalloc compares them).
- LOCAL_HOST_MEMSTATS=1: on each SIGUSR2, log the C allocator's figures (glibc mallinfo2: in use,
  free, mmapped) and Python's allocated blocks: whether growth is objects, or memory the allocator
  keeps (bench_listeners --memstats).
"""

from __future__ import annotations

import asyncio
import ctypes
import gc
import logging
import os
import signal
import sys
import tracemalloc
from pathlib import Path

_snapshots = 0


def _snapshot(folder: Path) -> None:
    global _snapshots
    gc.collect()  # what is still referenced, not what awaits collection
    folder.mkdir(parents=True, exist_ok=True)
    tracemalloc.take_snapshot().dump(str(folder / f"host-{_snapshots}.tracemalloc"))
    logging.getLogger("host").info("tracemalloc snapshot %d written", _snapshots)
    _snapshots += 1


def _memstats() -> None:
    gc.collect()
    names = ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")

    class MallInfo2(ctypes.Structure):
        _fields_ = [(n, ctypes.c_size_t) for n in names]

    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = MallInfo2
    m = libc.mallinfo2()  # the main arena and the threads' arenas together
    logging.getLogger("host").info(
        "memstats: malloc in use %d free %d mmapped %d; python blocks %d",
        m.uordblks,
        m.fordblks,
        m.hblkhd,
        sys.getallocatedblocks(),
    )


def start() -> None:
    """Before anything is allocated that the snapshots should see."""
    if os.environ.get("LOCAL_HOST_TRACEMALLOC"):
        tracemalloc.start(1)


def install(loop: asyncio.AbstractEventLoop) -> None:
    if os.environ.get("LOCAL_HOST_MEMSTATS"):
        loop.add_signal_handler(signal.SIGUSR2, _memstats)
    if os.environ.get("LOCAL_HOST_TRACEMALLOC"):
        loop.add_signal_handler(signal.SIGUSR1, _snapshot, Path(os.environ["LOCAL_HOST_TRACEMALLOC"]))
