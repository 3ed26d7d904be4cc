"""`func start`'s own storage setting, `AzureWebJobsStorage=UseDevelopmentStorage=true`, runs the app
and the audit command against Azurite on its default ports (10000-10002), as Core Tools reads it.
Those ports are fixed, so the check runs in a network namespace of its own (`unshare -n`, only
loopback): nothing else on the machine can hold them, and nothing here can disturb it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

DRIVER = r"""
import json, os, subprocess, sys, time
subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
from local.azurite import start_azurite
from realtime_gateway.archive.store import Archive
from realtime_gateway.archive.tables import table_service
from realtime_gateway.services import Services
from realtime_gateway.settings import load_settings

az = start_azurite(10000, 10001, 10002)
try:
    env = {"AZURE_OPENAI_ENDPOINT": "http://127.0.0.1:9", "AZURE_OPENAI_DEPLOYMENT": "d",
           "AzureWebJobsStorage": "UseDevelopmentStorage=true", "ARCHIVE_EVENTS_TABLE": "coreev",
           "ARCHIVE_SESSIONS_TABLE": "corese"}
    services = Services(load_settings(env))
    services.archive.ensure_tables()
    services.archive.open_session("rtc_coretools", "20261201", {"state": "ended", "created_at": "2026-12-01T10:00:00+00:00"})
    checks, _ = services.health.checks()
    print("health storage:", checks["storage"], flush=True)
    audit = subprocess.run(
        [sys.executable, "-m", "realtime_gateway.audit", "sessions", "--from", "2026-12-01", "--to", "2026-12-01",
         "--events-table", "coreev", "--sessions-table", "corese"],
        capture_output=True, text=True, timeout=60,
        env={**os.environ, "AzureWebJobsStorage": "UseDevelopmentStorage=true"},
    )
    print("audit exit:", audit.returncode, flush=True)
    print(audit.stdout + audit.stderr, flush=True)
finally:
    az.stop()
"""


@pytest.mark.skipif(shutil.which("unshare") is None or os.geteuid() != 0, reason="needs root and unshare")
def test_use_development_storage_runs_the_app_and_the_audit_command_against_azurite():
    out = subprocess.run(
        ["unshare", "-n", sys.executable, "-c", DRIVER], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "health storage: ok" in out.stdout, out.stdout
    assert "audit exit: 0" in out.stdout and "rtc_coretools" in out.stdout, out.stdout
