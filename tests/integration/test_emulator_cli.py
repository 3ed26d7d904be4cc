"""`python -m local.emulator` runs on its own: env configuration, ready line, clean stop."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import requests

from local.processes import free_port

ROOT = Path(__file__).resolve().parents[2]


def test_runs_from_environment_and_stops_on_sigterm():
    port = free_port()
    env = {
        "PATH": os.environ.get("PATH", ""),
        "PYTHONPATH": str(ROOT),
        "EMULATOR_PORT": str(port),
        "EMULATOR_DEPLOYMENT": "my-realtime",
        "EMULATOR_IDENTITY_HEADER": "hdr",
        "EMULATOR_TOKEN_LIFETIME": "120",
        "EMULATOR_API_KEY": "k",
        "EMULATOR_SESSION_MAX_SECONDS": "90",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "local.emulator"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline().strip()
        assert line == f"ready: realtime-emulator http://127.0.0.1:{port}"
        url = f"http://127.0.0.1:{port}"
        token = requests.get(
            f"{url}/msi/token",
            headers={"X-IDENTITY-HEADER": "hdr"},
            timeout=10,
            params={"api-version": "2019-08-01", "resource": "r"},
        ).json()
        assert 110 <= int(token["expires_on"]) - int(time.time()) <= 121
        r = requests.post(
            f"{url}/openai/v1/realtime/client_secrets",
            headers={"api-key": "k"},
            json={"session": {"type": "realtime", "model": "my-realtime"}},
            timeout=10,
        )
        assert r.status_code == 200
        assert requests.get(f"{url}/_emulator/stats", timeout=10).json()["client_secrets"] == 1
        call_id = requests.post(f"{url}/_emulator/calls", timeout=10).json()["call_id"]
        info = requests.get(f"{url}/_emulator/calls/{call_id}", timeout=10).json()
        assert 88 <= info["expires_at"] - time.time() <= 91  # the session cap from the environment
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(15)
    assert code == 0, proc.stderr.read()
