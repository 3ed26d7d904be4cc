"""The worker process's shared objects, built once and used by every trigger: settings, the
credential's token cache, the upstream client with its pooled HTTP session, and the archive.

Built on first use, so a bad setting answers every route with a 500 naming it instead of failing
import; the same SettingsError is raised on every later call.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Callable, Mapping

from . import redact
from .archive.codec import day_of
from .archive.store import Archive
from .archive.tables import table_service_from_env
from .gateway.health import Health
from .limits.limiter import Limiter
from .settings import Settings, SettingsError, load_settings
from .upstream.client import RealtimeApi
from .upstream.identity import BearerTokenProvider
from .upstream.secret_pool import SecretPool

log = logging.getLogger(__name__)

# The limits sit on the request path: fail fast (and by the fail-open/closed settings) rather than
# wait out the archive's patient retries when storage is slow or down.
LIMITS_STORAGE = {"retry_total": 1, "retry_backoff_factor": 0.2, "connection_timeout": 2, "read_timeout": 5}


class Process:
    def __init__(
        self,
        settings: Settings,
        env: Mapping[str, str] | None = None,
        archive: Archive | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.env = env if env is not None else os.environ
        self.clock = clock
        redact.add_known_secret(settings.api_key)
        self.tokens = None if settings.api_key else BearerTokenProvider(settings)
        self.api = RealtimeApi(settings, self.tokens)
        self.secret_pool = SecretPool(self.api)  # its threads start on the first /connect
        self._archive = archive
        self._archive_lock = threading.Lock()
        self.limits = Limiter(settings.limits, lambda: table_service_from_env(self.env, False, **LIMITS_STORAGE), clock)
        self.health = Health(
            self._identity_check if self.tokens else None, lambda: self.env, settings.health_cache_seconds
        )

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
                    table_service_from_env(self.env), self.settings.events_table, self.settings.sessions_table
                )
            return self._archive


_lock = threading.Lock()
_process: Process | None = None
_settings_error: SettingsError | None = None


def get_process() -> Process:
    global _process, _settings_error
    if _process is not None:
        return _process
    with _lock:
        if _process is None:
            if _settings_error is not None:
                raise _settings_error
            try:
                settings = load_settings()
            except SettingsError as exc:
                _settings_error = exc
                log.error("%s", exc)
                raise
            _process = Process(settings)
        return _process


def reset_process(process: Process | None = None) -> None:
    """Tests: drop (or replace) the process's objects so the next call reloads settings."""
    global _process, _settings_error
    with _lock:
        if _process is not None and _process is not process:
            _process.secret_pool.close()  # a new process's settings mean a new pool
        _process, _settings_error = process, None
