"""Is the app's storage account reachable? (for /api/health; a cheap list of one table)."""
from __future__ import annotations

from typing import Any, Mapping

TIMEOUT = 3  # seconds; health must answer quickly


def storage_reachable(env: Mapping[str, str], credential: Any = None) -> tuple[bool, str]:
    from azure.core.exceptions import AzureError
    from azure.data.tables import TableServiceClient

    conn = env.get("AzureWebJobsStorage", "").strip()
    try:
        if conn:
            client = TableServiceClient.from_connection_string(
                conn, connection_timeout=TIMEOUT, read_timeout=TIMEOUT, retry_total=0)
        else:
            uri = env.get("AzureWebJobsStorage__tableServiceUri", "").strip()
            account = env.get("AzureWebJobsStorage__accountName", "").strip()
            if not uri and account:
                uri = f"https://{account}.table.core.windows.net"
            if not uri:
                return False, "no storage connection configured (AzureWebJobsStorage)"
            client_id = env.get("AzureWebJobsStorage__clientId")
            if credential is None or client_id:
                from azure.identity import DefaultAzureCredential, ManagedIdentityCredential
                credential = (ManagedIdentityCredential(client_id=client_id) if client_id
                              else DefaultAzureCredential())
            client = TableServiceClient(endpoint=uri, credential=credential, connection_timeout=TIMEOUT,
                                        read_timeout=TIMEOUT, retry_total=0)
        with client:
            next(iter(client.list_tables(results_per_page=1).by_page()), None)
        return True, "ok"
    except AzureError as exc:
        return False, f"storage not reachable ({type(exc).__name__})"
    except ValueError as exc:  # malformed connection string
        return False, f"storage connection setting is malformed ({type(exc).__name__})"
