"""Build the Table Storage client from the app's storage connection settings.

Locally (Azurite) `AzureWebJobsStorage` is a connection string; in Azure it is absent and
`AzureWebJobsStorage__tableServiceUri` (or `__accountName`) plus the managed identity are used,
so no account key ever sits in settings. A plain connection string wins, as in the Functions host.
"""
from __future__ import annotations

from typing import Any, Mapping

from azure.data.tables import TableServiceClient


class StorageConfigError(ValueError):
    """Neither a connection string nor an identity-based table endpoint is configured."""


def table_service_from_env(env: Mapping[str, str], **client_options: Any) -> TableServiceClient:
    conn = (env.get("AzureWebJobsStorage") or "").strip()
    if conn:
        if conn.lower() == "usedevelopmentstorage=true":
            raise StorageConfigError("AzureWebJobsStorage=UseDevelopmentStorage=true names fixed ports; "
                                     "give Azurite's full connection string")
        return TableServiceClient.from_connection_string(conn, **client_options)
    uri = (env.get("AzureWebJobsStorage__tableServiceUri") or "").strip().rstrip("/")
    account = (env.get("AzureWebJobsStorage__accountName") or "").strip()
    if not uri and account:
        uri = f"https://{account}.table.core.windows.net"
    if not uri:
        raise StorageConfigError("set AzureWebJobsStorage (connection string, local) or "
                                 "AzureWebJobsStorage__tableServiceUri (managed identity, Azure)")
    from azure.identity import ManagedIdentityCredential
    client_id = (env.get("AzureWebJobsStorage__clientId") or "").strip() or None
    return TableServiceClient(endpoint=uri, credential=ManagedIdentityCredential(client_id=client_id),
                              **client_options)
