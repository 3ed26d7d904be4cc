"""The listeners' own threads: one per live call, outside the Functions worker's thread pool.

A listener blocks on its sideband socket (websocket-client) for the whole call. Run as a sync
function, each one held a thread of the worker's pool, which PYTHON_THREADPOOL_THREAD_COUNT caps at
32, so an instance recorded at most that many calls and /api/connect queued behind them. The queue
trigger is async instead and hands each call to this pool, sized by LISTENER_MAX_CONCURRENT; host.json's
batchSize + newBatchThreshold say how many messages the host runs at once (README: listener capacity).
"""

from __future__ import annotations

import asyncio
import functools
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, TypeVar

from ..process import get_process

T = TypeVar("T")
_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None


def listener_pool() -> ThreadPoolExecutor:
    global _pool
    with _lock:
        if _pool is None:
            size = get_process().settings.listener_max_concurrent  # a bad setting raises here, every time
            _pool = ThreadPoolExecutor(max_workers=size, thread_name_prefix="listener")
        return _pool


async def in_listener_thread(fn: Callable[..., T], *args, **kwargs) -> T:
    return await asyncio.get_running_loop().run_in_executor(listener_pool(), functools.partial(fn, *args, **kwargs))
