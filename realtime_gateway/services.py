"""The composition root: the worker process's shared objects, built once and handed to every
trigger: settings, the credential's token cache, the upstream client with its pooled HTTP session,
the secret pool, the limiter, the archive, the health check and the listeners' threads.

Only function_app.py and the audit command use it; every stage below receives what it needs.
Built on first use, so a bad setting answers every route with a 500 naming it instead of failing
import; the same SettingsError is raised on every later call.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, TypeVar

from . import redact
from .archive.store import Archive
from .archive.tables import table_service
from .core.clock import day_of
from .gateway.health import Health
from .limits.limiter import Limiter
from .phone.deliveries import Deliveries
from .settings import Settings, SettingsError, load_settings
from .upstream.identity import BearerTokenProvider
from .upstream.realtime_api import RealtimeApi
from .upstream.secret_pool import SecretPool

log = logging.getLogger(__name__)
T = TypeVar("T")

# The limits sit on the request path: fail fast (and by the fail-open/closed settings) rather than
# wait out the archive's patient retries when storage is slow or down.
LIMITS_STORAGE = {"retry_total": 1, "retry_backoff_factor": 0.2, "connection_timeout": 2, "read_timeout": 5}


class Services:
    def __init__(
        self, settings: Settings, archive: Archive | None = None, clock: Callable[[], float] = time.time
    ) -> None:
        self.settings = settings
        self.clock = clock
        redact.add_known_secret(settings.api_key)
        self.tokens = None if settings.api_key else BearerTokenProvider(settings)
        self.api = RealtimeApi(settings, self.tokens)
        self.secret_pool = SecretPool(self.api)  # its threads start on the first /connect
        self._archive = archive
        self._archive_lock = threading.Lock()
        self.limits = Limiter(
            settings.limits, lambda: table_service(self.settings.storage, False, **LIMITS_STORAGE), clock
        )
        # phone calls: each webhook delivery claimed once, in the limits table (same fast-fail storage)
        self.deliveries = Deliveries(
            lambda: table_service(self.settings.storage, False, **LIMITS_STORAGE), settings.limits.table, clock
        )
        self.health = Health(
            self._identity_check if self.tokens else None, lambda: self.settings.storage, settings.health_cache_seconds
        )
        self._listeners: ThreadPoolExecutor | None = None
        self._listeners_lock = threading.Lock()

    def _identity_check(self) -> None:
        if self.tokens is not None:  # tests swap the provider: ask the current one
            self.tokens.token()

    def free_ended_slots(self) -> int:
        """Reconcile the active-call slots with the archive: free those of calls that have ended
        (yesterday's and today's: no call outlives MAX_CALL_SECONDS, an hour at most)."""
        if not self.limits.tracks_calls:
            return 0
        now = self.clock()
        freed = self.limits.reconcile(self.archive.ended_slots(day_of(now - 86400), day_of(now)))
        if freed:
            log.warning("limits: freed %d slot(s) of calls that had ended without releasing them", freed)
        return freed

    @property
    def archive(self) -> Archive:
        """The call archive's tables, built on first use (the HTTP-only routes never need it)."""
        with self._archive_lock:
            if self._archive is None:
                self._archive = Archive(
                    table_service(self.settings.storage), self.settings.events_table, self.settings.sessions_table
                )
            return self._archive

    async def in_listener_thread(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a listener on the listeners' own threads, outside the Functions worker's pool.

        A listener blocks on its sideband socket for the whole call. Run as a sync function, each
        one held a thread of the worker's pool, which PYTHON_THREADPOOL_THREAD_COUNT caps at 32, so an
        instance recorded at most that many calls and /api/connect queued behind them. The queue
        trigger is async instead and hands each call to this pool, sized by LISTENER_MAX_CONCURRENT;
        host.json's batchSize + newBatchThreshold say how many run at once (docs/listener.md).
        """
        with self._listeners_lock:
            if self._listeners is None:
                size = self.settings.listener_max_concurrent
                self._listeners = ThreadPoolExecutor(max_workers=size, thread_name_prefix="listener")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._listeners, functools.partial(fn, *args, **kwargs))


_lock = threading.Lock()
_services: Services | None = None
_settings_error: SettingsError | None = None


def get_services() -> Services:
    global _services, _settings_error
    if _services is not None:
        return _services
    with _lock:
        if _services is None:
            if _settings_error is not None:
                raise _settings_error
            try:
                settings = load_settings()
            except SettingsError as exc:
                _settings_error = exc
                log.error("%s", exc)
                raise
            _services = Services(settings)
        return _services


def reset_services(services: Services | None = None) -> None:
    """Tests: drop (or replace) the process's objects so the next call reloads settings."""
    global _services, _settings_error
    with _lock:
        if _services is not None and _services is not services:
            _services.secret_pool.close()  # a new process's settings mean a new pool
        _services, _settings_error = services, None
