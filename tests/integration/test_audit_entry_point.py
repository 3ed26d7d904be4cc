"""`realtime-audit`, the console entry point `make test`/`make run` install into .venv, is the audit command."""

import os
import subprocess
import sys
from pathlib import Path


def test_realtime_audit_is_the_audit_command():
    command = Path(sys.executable).parent / "realtime-audit"
    out = subprocess.run([str(command), "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    for verb in ("sessions", "show", "export", "verify", "report"):
        assert verb in out.stdout
    env = {k: v for k, v in os.environ.items() if not k.startswith("AzureWebJobsStorage")}
    bad = subprocess.run([str(command), "list"], capture_output=True, text=True, timeout=60, env=env)
    # no storage configured: one line saying which setting, exit 2, never a traceback
    assert bad.returncode == 2 and "AzureWebJobsStorage" in bad.stderr and "Traceback" not in bad.stderr
