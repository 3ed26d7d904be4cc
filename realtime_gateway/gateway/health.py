"""Is the app's storage account reachable? (for /api/health; a cheap list of one table)."""

from __future__ import annotations

from typing import Mapping

from ..archive.tables import StorageConfigError, table_service_from_env

TIMEOUT = 3  # seconds; health must answer quickly


def storage_reachable(env: Mapping[str, str]) -> tuple[bool, str]:
    from azure.core.exceptions import AzureError

    try:
        with table_service_from_env(env, connection_timeout=TIMEOUT, read_timeout=TIMEOUT, retry_total=0) as client:
            next(iter(client.list_tables(results_per_page=1).by_page()), None)
        return True, "ok"
    except StorageConfigError:
        return False, "no storage connection configured (AzureWebJobsStorage)"
    except AzureError as exc:
        return False, f"storage not reachable ({type(exc).__name__})"
    except ValueError as exc:  # malformed connection string
        return False, f"storage connection setting is malformed ({type(exc).__name__})"
