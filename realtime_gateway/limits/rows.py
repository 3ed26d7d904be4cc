"""Compare-and-swap on the limits table's rows: read (or take the cached copy), change, write back
with the ETag; a 412/409 means another instance wrote first, so re-read and try again.

The cache keeps the last row this process read or wrote, so a warm instance writes with its cached
ETag at once: one storage round trip when nobody else wrote in between. Writers of one row in this
process take turns (a lock per row): racing each other, 24 request threads on the one slots row
lost all their tries and refused calls; in turn, only other instances can make a write retry.
"""

from __future__ import annotations

import random
import threading
import time
from typing import Any, Callable, TypeVar

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import TableClient, UpdateMode

T = TypeVar("T")
TRIES = 8
CACHE_ROWS = 10000
ROW_LOCKS = 256  # striped: two rows may share a lock, which only makes them take turns
# change(row) -> (new row or None for "no write", result)
Change = Callable[[dict[str, Any]], tuple[dict[str, Any] | None, T]]


class Contended(RuntimeError):
    """Too many writers on one row: the limit cannot be decided now."""


class Rows:
    def __init__(self, table: TableClient) -> None:
        self.table = table
        self._cache: dict[tuple[str, str], tuple[str | None, dict[str, Any]]] = {}
        self._lock = threading.Lock()
        self._row_locks = [threading.Lock() for _ in range(ROW_LOCKS)]

    def cached(self, pk: str, rk: str) -> dict[str, Any] | None:
        with self._lock:
            hit = self._cache.get((pk, rk))
        return dict(hit[1]) if hit else None

    def read(self, pk: str, rk: str) -> dict[str, Any]:
        try:
            entity = self.table.get_entity(pk, rk)
        except ResourceNotFoundError:
            self._remember(pk, rk, None, {})
            return {}
        row = {k: v for k, v in entity.items() if k not in ("PartitionKey", "RowKey")}
        self._remember(pk, rk, entity.metadata["etag"], row)
        return dict(row)

    def change(self, pk: str, rk: str, change: Change[T], assume_new: bool = False) -> T:
        """Apply `change` atomically. `assume_new`: with nothing cached, try creating the row
        before reading it (a new rate window's first request pays one round trip, not two)."""
        with self._row_locks[hash((pk, rk)) % ROW_LOCKS]:  # `change` never changes another row
            return self._change(pk, rk, change, assume_new)

    def _change(self, pk: str, rk: str, change: Change[T], assume_new: bool) -> T:
        for attempt in range(TRIES):
            if attempt:  # another instance wrote first: let the writers spread out
                time.sleep(random.uniform(0, 0.005 * 2**attempt))
            with self._lock:
                hit = self._cache.get((pk, rk))
            if hit is None and assume_new:
                hit = (None, {})
            if hit is None:
                self.read(pk, rk)
                with self._lock:
                    hit = self._cache[(pk, rk)]
            etag, row = hit
            new, result = change(dict(row))
            if new is None:
                return result
            entity = {"PartitionKey": pk, "RowKey": rk, **new}
            try:
                if etag is None:
                    meta = self.table.create_entity(entity)
                else:
                    meta = self.table.update_entity(
                        entity, mode=UpdateMode.REPLACE, etag=etag, match_condition=MatchConditions.IfNotModified
                    )
            except (ResourceModifiedError, ResourceExistsError, ResourceNotFoundError):
                self.read(pk, rk)  # someone else wrote (or deleted) it: decide again on what is there
                continue
            self._remember(pk, rk, meta.get("etag"), new)
            return result
        raise Contended(f"row {pk}/{rk} changed under us {TRIES} times")

    def _remember(self, pk: str, rk: str, etag: str | None, row: dict[str, Any]) -> None:
        with self._lock:
            if len(self._cache) >= CACHE_ROWS:
                self._cache.clear()  # old rate windows: cheaper to forget all than to track age
            self._cache[(pk, rk)] = (etag, row)
