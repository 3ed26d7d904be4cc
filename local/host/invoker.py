"""Run one invocation: async on the loop, sync in a thread pool, under functionTimeout, logged
in the real host's `Executing` / `Executed` form."""

from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .app_loader import FunctionSpec

log = logging.getLogger("host")


class FunctionTimeout(Exception):
    pass


class Context:
    """What the worker passes to a parameter named `context`."""

    def __init__(self, invocation_id: str, function_name: str, function_directory: str):
        self.invocation_id = invocation_id
        self.function_name = function_name
        self.function_directory = function_directory
        self.trace_context = None
        self.retry_context = None


def thread_pool_size(settings) -> int | None:
    raw = settings.get("PYTHON_THREADPOOL_THREAD_COUNT", "").strip()
    if raw:
        return max(1, int(raw))
    return min(32, (os.cpu_count() or 1) + 4)  # the Python worker's default on 3.9+


class Invoker:
    def __init__(self, settings, function_timeout: float | None, script_root: str):
        self.pool = ThreadPoolExecutor(max_workers=thread_pool_size(settings), thread_name_prefix="function")
        self.timeout = function_timeout
        self.script_root = script_root

    async def invoke(self, spec: FunctionSpec, args: dict[str, Any], reason: str) -> Any:
        """Call the user function; raise what it raised, or FunctionTimeout."""
        invocation_id = str(uuid.uuid4())
        if "context" in spec.params and "context" not in args:
            args["context"] = Context(invocation_id, spec.name, self.script_root)
        log.info("Executing 'Functions.%s' (Reason='%s', Id=%s)", spec.name, reason, invocation_id)
        start = time.monotonic()
        status = "Succeeded"
        try:
            if spec.is_async:
                work = spec.func(**args)
            else:
                work = asyncio.get_running_loop().run_in_executor(self.pool, lambda: spec.func(**args))
            try:
                return await asyncio.wait_for(work, self.timeout)
            except TimeoutError:
                # A sync thread cannot be killed: we stop waiting and count the try as failed.
                status = "Failed"
                log.error(
                    "Timeout value of %s exceeded by function 'Functions.%s' (Id: '%s'). Initiating cancellation.",
                    _fmt(self.timeout),
                    spec.name,
                    invocation_id,
                )
                raise FunctionTimeout(f"function {spec.name} exceeded functionTimeout") from None
        except FunctionTimeout:
            raise
        except BaseException as exc:
            status = "Failed"
            log.error("Executed 'Functions.%s' failed: %s: %s", spec.name, type(exc).__name__, exc)
            raise
        finally:
            ms = (time.monotonic() - start) * 1000
            log.info("Executed 'Functions.%s' (%s, Id=%s, Duration=%dms)", spec.name, status, invocation_id, ms)

    def shutdown(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)


def _fmt(seconds: float | None) -> str:
    s = int(seconds or 0)
    return f"{s // 3600:02d}:{s % 3600 // 60:02d}:{s % 60:02d}"
