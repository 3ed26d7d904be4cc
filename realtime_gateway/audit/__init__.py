"""The auditor's view of the archive: `python -m realtime_gateway.audit` (list, show, verify, report)."""

from .cli import main
from .verify import VerifyReport, verify_call

__all__ = ["main", "verify_call", "VerifyReport"]
