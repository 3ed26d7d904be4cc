"""Queue clients from the connection a binding names, and the queue output binding's writer."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Any

from azure.core.exceptions import ResourceExistsError
from azure.storage.queue.aio import QueueClient

from realtime_gateway.settings import DEVELOPMENT_STORAGE

from .app_loader import FunctionSpec
from .bindings import OutValue, encode_message, queue_messages


class MissingConnection(RuntimeError):
    pass


def connection_string(connection: str | None, settings: Mapping[str, str]) -> str:
    """The app setting a binding's `connection` names (default AzureWebJobsStorage)."""
    name = connection or "AzureWebJobsStorage"
    for candidate in (name, "AzureWebJobs" + name):
        value = settings.get(candidate, "").strip()
        if value:
            return DEVELOPMENT_STORAGE if value.lower() == "usedevelopmentstorage=true" else value
    if any(k.startswith(name + "__") for k in settings):
        raise MissingConnection(
            f"connection {name!r} is identity-based ({name}__...); the local host "
            f"needs a connection string (Azurite) in the {name} setting"
        )
    raise MissingConnection(f"app setting {name!r} (storage connection string) is not set")


class QueueClients:
    """One client per (connection, queue), the queue created on first use."""

    def __init__(self, settings: Mapping[str, str]):
        self.settings = settings
        self._clients: dict[tuple[str, str], QueueClient] = {}
        self._lock = asyncio.Lock()

    async def get(self, connection: str | None, queue: str) -> QueueClient:
        conn = connection_string(connection, self.settings)
        key = (conn, queue)
        async with self._lock:
            client = self._clients.get(key)
            if client is None:
                client = QueueClient.from_connection_string(conn, queue)
                try:
                    await client.create_queue()
                except ResourceExistsError:
                    pass
                self._clients[key] = client
        return client

    async def close(self) -> None:
        for client in self._clients.values():
            await client.close()


class QueueOutputWriter:
    """Writes queue output bindings after a successful invocation, encoded as host.json says."""

    def __init__(self, clients: QueueClients, encoding: str, on_write: Callable[[str, str], None]):
        self.clients = clients
        self.encoding = encoding
        self.on_write = on_write  # lets a listener in this host poll at once, like the real host

    async def write_outputs(self, spec: FunctionSpec, returned: Any, outs: dict[str, OutValue]) -> None:
        """Every queue output of a successful invocation: `$return` takes what the function
        returned, a parameter binding the value its `func.Out` was set to."""
        for b in spec.outputs:
            if b["type"] == "queue":
                await self.write(b, returned if b["name"] == "$return" else outs[b["name"]].get())

    async def write(self, binding: dict, value: Any) -> int:
        messages = queue_messages(value)
        if not messages:
            return 0
        client = await self.clients.get(binding.get("connection"), binding["queueName"])
        for data in messages:
            await client.send_message(encode_message(data, self.encoding))
        self.on_write(binding.get("connection") or "AzureWebJobsStorage", binding["queueName"])
        return len(messages)
