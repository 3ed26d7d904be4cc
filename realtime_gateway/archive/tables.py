"""Build the Table Storage client from the app's storage connection (settings.storage_connection).

Locally (Azurite) `AzureWebJobsStorage` is a connection string; in Azure it is absent and
`AzureWebJobsStorage__tableServiceUri` (or `__accountName`) plus the managed identity are used,
so no account key ever sits in settings. A plain connection string wins, as in the Functions host.
"""

from __future__ import annotations

from typing import Any, Mapping

from azure.data.tables import TableServiceClient

from ..settings import NO_STORAGE, StorageConfigError, StorageConnection, storage_connection

__all__ = ["StorageConfigError", "table_service", "table_service_from_env"]

# The SDK's own retry policy, configured rather than wrapped: connection errors, timeouts, 408/429
# and 5xx on reads are retried within about 4 s (0.25, 0.5, 1, 2 s). azure-core never retries a
# POST (every archive write) on 500/503/504; the archive writer retries every failed write itself.
RETRY = {
    "retry_total": 4,
    "retry_backoff_factor": 0.25,
    "retry_backoff_max": 2,
    "connection_timeout": 5,
    "read_timeout": 30,
}


def table_service_from_env(
    env: Mapping[str, str], own_identity: bool = False, **client_options: Any
) -> TableServiceClient:
    return table_service(storage_connection(env), own_identity, **client_options)


def table_service(
    storage: StorageConnection | None, own_identity: bool = False, **client_options: Any
) -> TableServiceClient:
    """`own_identity`: a person's sign-in (the audit command) instead of the app's managed identity;
    `storage` None: not configured (Settings.storage), a StorageConfigError naming the settings."""
    if storage is None:
        raise StorageConfigError(NO_STORAGE)
    client_options = {**RETRY, **client_options}
    if storage.connection_string:
        return TableServiceClient.from_connection_string(storage.connection_string, **client_options)
    from azure.identity import DefaultAzureCredential, ManagedIdentityCredential

    credential = DefaultAzureCredential() if own_identity else ManagedIdentityCredential(client_id=storage.client_id)
    return TableServiceClient(endpoint=storage.table_uri, credential=credential, **client_options)
