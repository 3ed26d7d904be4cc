"""The auditor's view of the archive: `python -m realtime_gateway.audit` (sessions, show, export,
verify, report) and the read-only audit API's logic (`api.py`)."""

from .cli import main
from .verify import VerifyReport, verify_call

__all__ = ["main", "verify_call", "VerifyReport"]
