"""Each webhook delivery is acted on once: a row per `webhook-id`, created with a conditional insert
in the app's storage (the limits table), so every instance sees the first delivery's claim."""

from __future__ import annotations

import hashlib
import threading
import time
from typing import Callable

from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.data.tables import TableClient, TableServiceClient

from ..core.clock import utc_iso

PARTITION_PREFIX = "sipwebhook-"  # + the first two hex digits of the id's hash: 256 partitions


def _keys(webhook_id: str) -> tuple[str, str]:
    digest = hashlib.sha256(webhook_id.encode("utf-8")).hexdigest()
    return PARTITION_PREFIX + digest[:2], digest  # a table-key-safe name, whatever the id holds


class Deliveries:
    def __init__(
        self, service: Callable[[], TableServiceClient], table: str, clock: Callable[[], float] = time.time
    ) -> None:
        self._service, self._table_name, self._clock = service, table, clock
        self._table: TableClient | None = None
        self._lock = threading.Lock()

    @property
    def table(self) -> TableClient:
        with self._lock:
            if self._table is None:
                service = self._service()
                try:
                    service.create_table(self._table_name)
                except ResourceExistsError:
                    pass
                self._table = service.get_table_client(self._table_name)
            return self._table

    def claim(self, webhook_id: str, call_id: str) -> bool:
        """True for the first delivery of this id, False for a repeat (on any instance)."""
        pk, rk = _keys(webhook_id)
        try:
            self.table.create_entity(
                {"PartitionKey": pk, "RowKey": rk, "call_id": call_id, "received_at": utc_iso(self._clock())}
            )
        except ResourceExistsError:
            return False
        return True

    def record(self, webhook_id: str, outcome: str) -> None:
        pk, rk = _keys(webhook_id)
        self.table.update_entity({"PartitionKey": pk, "RowKey": rk, "outcome": outcome})

    def forget(self, webhook_id: str) -> None:
        """Let a retried delivery act again: this one failed before the call was answered or refused."""
        pk, rk = _keys(webhook_id)
        try:
            self.table.delete_entity(pk, rk)
        except ResourceNotFoundError:
            pass
