"""Is the app's storage account reachable? (for /api/health; a cheap list of one table)."""

from __future__ import annotations

import threading
import time
from typing import Callable

from ..archive.tables import StorageConfigError, table_service
from ..core.clock import utc_iso
from ..errors import ApiError
from ..settings import StorageConnection

TIMEOUT = 3  # seconds; health must answer quickly


def storage_reachable(storage: StorageConnection | None) -> tuple[bool, str]:
    from azure.core.exceptions import AzureError

    try:
        with table_service(storage, connection_timeout=TIMEOUT, read_timeout=TIMEOUT, retry_total=0) as client:
            next(iter(client.list_tables(results_per_page=1).by_page()), None)
        return True, "ok"
    except StorageConfigError:
        return False, "no storage connection configured (AzureWebJobsStorage)"
    except AzureError as exc:
        return False, f"storage not reachable ({type(exc).__name__})"
    except ValueError as exc:  # malformed connection string
        return False, f"storage connection setting is malformed ({type(exc).__name__})"


class Health:
    """The health route's checks, asked at most once per `ttl` seconds per process."""

    def __init__(
        self, identity: Callable[[], object] | None, storage: Callable[[], StorageConnection | None], ttl: float
    ) -> None:
        self._identity, self._storage, self._ttl = identity, storage, ttl
        self._lock = threading.Lock()
        self._checked: tuple[float, dict[str, str]] | None = None
        self._at = ""

    def checks(self) -> tuple[dict[str, str], str]:
        """The checks and when they were asked (ISO time)."""
        with self._lock:  # one request asks; the others wait for its answer instead of asking too
            if self._checked is None or time.monotonic() - self._checked[0] >= self._ttl:
                self._checked = (time.monotonic(), self._ask())
                self._at = utc_iso(time.time())
            return dict(self._checked[1]), self._at

    def _ask(self) -> dict[str, str]:
        checks: dict[str, str] = {"settings": "ok"}
        if self._identity is None:
            checks["identity"] = "not used (api key)"
        else:
            try:
                self._identity()
                checks["identity"] = "ok"
            except ApiError as exc:
                checks["identity"] = exc.message
        checks["storage"] = storage_reachable(self._storage())[1]
        return checks
