"""`python -m local.stack` (what `make run` runs): ready lines, the page and API answer, and
SIGTERM stops every child; with a real endpoint given, no emulator and no IDENTITY_*."""

import os
import signal
import socket
import subprocess
import sys
import threading
import time

import requests

from local.processes import free_port
from local.testing.host_process import ROOT


class Stack:
    def __init__(self, tmp_path, **env):
        self.ports = {
            k: free_port()
            for k in (
                "AZURITE_BLOB_PORT",
                "AZURITE_QUEUE_PORT",
                "AZURITE_TABLE_PORT",
                "EMULATOR_PORT",
                "FUNCTIONS_PORT",
            )
        }
        full_env = {
            **os.environ,
            **{k: str(v) for k, v in self.ports.items()},
            "STACK_DATA_DIR": str(tmp_path / "data"),
            "PYTHONUNBUFFERED": "1",
            **env,
        }
        self.lines: list[str] = []
        self.process = subprocess.Popen(
            [sys.executable, "-m", "local.stack"],
            cwd=ROOT,
            env=full_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        threading.Thread(
            target=lambda: [self.lines.append(line.rstrip("\n")) for line in self.process.stdout], daemon=True
        ).start()

    def wait_for(self, prefix: str, timeout: float = 90) -> str:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            for line in list(self.lines):
                if line.startswith(prefix):
                    return line
            assert self.process.poll() is None, "\n".join(self.lines)
            time.sleep(0.1)
        raise AssertionError(f"no {prefix!r} line:\n" + "\n".join(self.lines))

    def terminate(self) -> int:
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
        try:
            return self.process.wait(30)
        finally:
            if self.process.poll() is None:
                os.killpg(self.process.pid, signal.SIGKILL)


def listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_stack_prints_ready_lines_serves_the_page_and_stops_cleanly(tmp_path):
    stack = Stack(tmp_path)
    try:
        opened = stack.wait_for("open ")
        gateway = f"http://127.0.0.1:{stack.ports['FUNCTIONS_PORT']}"
        assert opened == f"open {gateway}/"
        assert stack.wait_for("ready: gateway ") == f"ready: gateway {gateway}"
        assert (
            stack.wait_for("ready: realtime-emulator ")
            == f"ready: realtime-emulator http://127.0.0.1:{stack.ports['EMULATOR_PORT']}"
        )
        storage = stack.wait_for("ready: storage ")
        assert f"QueueEndpoint=http://127.0.0.1:{stack.ports['AZURITE_QUEUE_PORT']}/devstoreaccount1" in storage
        assert requests.get(gateway + "/").status_code == 200
        # The wiring works end to end: origin allowed, identity endpoint and emulator reached.
        r = requests.get(gateway + "/api/health", headers={"Origin": gateway}, timeout=30)
        assert r.status_code == 200 and r.json()["checks"]["identity"] == "ok", r.text
        assert requests.get(f"http://127.0.0.1:{stack.ports['EMULATOR_PORT']}/_emulator/stats").ok
    finally:
        code = stack.terminate()
    assert code == 0, "\n".join(stack.lines)
    for port in stack.ports.values():
        assert not listening(port), f"port {port} still open after SIGTERM"


def test_stack_with_a_real_endpoint_starts_no_emulator(tmp_path):
    stack = Stack(tmp_path, AZURE_OPENAI_ENDPOINT="https://example-resource.openai.azure.com")
    try:
        stack.wait_for("open ")
        assert stack.wait_for("ready: azure-openai ") == "ready: azure-openai https://example-resource.openai.azure.com"
        assert not any(line.startswith("ready: realtime-emulator") for line in stack.lines)
        assert not listening(stack.ports["EMULATOR_PORT"])
    finally:
        assert stack.terminate() == 0
