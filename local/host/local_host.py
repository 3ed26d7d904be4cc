"""The local host: app settings, host.json, the loaded functions, the HTTP server and the queue
listeners, started and stopped together."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Mapping
from pathlib import Path

from aiohttp import web

from .app_loader import FunctionSpec, load_functions
from .host_config import load_host_config
from .http_server import HttpTriggers
from .invoker import Invoker
from .keys import load_keys
from .queue_listener import QueueListener
from .storage import QueueClients, QueueOutputWriter, connection_string
from .timer import TimerListener

log = logging.getLogger("host")
SUPPORTED_TRIGGERS = {"httpTrigger", "queueTrigger", "timerTrigger"}
SUPPORTED_OUTPUTS = {"queue", "http"}


class UnsupportedFunction(RuntimeError):
    pass


def check_supported(spec: FunctionSpec) -> None:
    """Fail at start-up, naming the function, rather than run it half-wired."""
    if spec.trigger_type not in SUPPORTED_TRIGGERS:
        raise UnsupportedFunction(
            f"function {spec.name}: trigger {spec.trigger_type} is not supported by the local host (use `func start`)"
        )
    for b in spec.outputs:
        if b["type"] not in SUPPORTED_OUTPUTS:
            raise UnsupportedFunction(f"function {spec.name}: output binding {b['type']} is not supported")
    known = {spec.trigger["name"], "context"} | {b["name"] for b in spec.outputs}
    for name, param in spec.params.items():
        if name not in known and param.default is param.empty:
            raise UnsupportedFunction(f"function {spec.name}: parameter {name!r} has no binding")


class LocalHost:
    def __init__(
        self,
        script_root: Path,
        settings: Mapping[str, str] | None = None,
        static_dir: Path | None = None,
        cors_origins: tuple[str, ...] = (),
        cors_credentials: bool = False,
    ):
        self.script_root = script_root.resolve()
        self.settings = dict(os.environ if settings is None else settings)
        self.config = load_host_config(self.script_root)
        self.specs = load_functions(self.script_root, self.settings)
        for spec in self.specs:
            check_supported(spec)
            for b in [spec.trigger, *spec.outputs]:
                if b["type"] in ("queue", "queueTrigger"):
                    connection_string(b.get("connection"), self.settings)  # fail now, naming it
        self.invoker = Invoker(self.settings, self.config.function_timeout, str(self.script_root))
        self.clients = QueueClients(self.settings)
        self.writer = QueueOutputWriter(self.clients, self.config.queues.message_encoding, self._notify)
        lease = float(self.settings.get("LOCAL_QUEUE_LEASE_SECONDS", "600"))  # the real host's 10 min
        self.listeners = [
            QueueListener(s, self.config.queues, self.clients, self.invoker, self.writer, lease)
            for s in self.specs
            if s.trigger_type == "queueTrigger"
        ]
        self.timers = [TimerListener(s, self.invoker) for s in self.specs if s.trigger_type == "timerTrigger"]
        self.keys, keys_source = load_keys(self.settings, self.script_root)
        self.http = HttpTriggers(
            [s for s in self.specs if s.trigger_type == "httpTrigger"],
            self.config.route_prefix,
            self.keys,
            self.invoker,
            self.writer,
            static_dir,
            cors_origins,
            cors_credentials,
        )
        self.http.manual_runs = {t.spec.name: t.fire for t in self.timers}
        self._keys_source = keys_source
        self._tasks: list[asyncio.Task] = []
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    def _notify(self, connection: str, queue: str) -> None:
        for listener in self.listeners:
            if listener.queue_name == queue and listener.connection == connection:
                listener.notify()

    async def start(self, host: str, port: int) -> str:
        self._runner = web.AppRunner(self.http.application(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        self.port = self._runner.addresses[0][1]
        for listener in self.listeners:
            task = asyncio.create_task(listener.run(), name=f"queue:{listener.spec.name}")
            task.add_done_callback(_report_crash)
            self._tasks.append(task)
        for timer in self.timers:
            task = asyncio.create_task(timer.run(), name=f"timer:{timer.spec.name}")
            task.add_done_callback(_report_crash)
            self._tasks.append(task)
        log.info("Functions (keys for function/admin levels from %s):", self._keys_source)
        for line in self.http.describe():
            log.info("  %s", line)
        for listener in self.listeners:
            log.info("  %s: queueTrigger on '%s' (%s)", listener.spec.name, listener.queue_name, listener.connection)
        for timer in self.timers:
            log.info("  %s: timerTrigger '%s'", timer.spec.name, timer.schedule.expression)
        return f"http://{host}:{self.port}"

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._runner:
            await self._runner.cleanup()
        await self.clients.close()
        self.invoker.shutdown()


def _report_crash(task: asyncio.Task) -> None:
    if not task.cancelled() and task.exception():
        log.error("%s stopped: %s", task.get_name(), task.exception())
