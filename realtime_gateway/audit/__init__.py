"""The auditor's view of the archive: `realtime-audit` (or `python -m realtime_gateway.audit`) (sessions, show, export,
verify, report) and the read-only audit API's logic (`api.py`)."""

from __future__ import annotations

from .verify import VerifyReport, verify_call


def main(argv: list[str] | None = None) -> int:
    """The audit command; imported on use, so the app's HTTP path never loads the CLI and its report."""
    from .cli import main as run

    return run(argv)


__all__ = ["main", "verify_call", "VerifyReport"]
