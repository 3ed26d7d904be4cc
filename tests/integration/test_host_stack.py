"""`python -m local.stack` (what `make run` runs): ready lines, the page and API answer, and
SIGTERM stops every child; a phone call from the emulator, archived and audited; with a real
endpoint given, no emulator and no IDENTITY_*."""

import os
import signal
import socket
import sys
import threading
import time

import requests

from local.processes import free_port, start_group
from local.testing.host_process import ROOT, wait_until
from realtime_gateway.archive.store import Archive
from realtime_gateway.archive.tables import table_service_from_env
from realtime_gateway.audit.cli import main as audit_main


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
        self.process = start_group([sys.executable, "-m", "local.stack"], full_env, ROOT)
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


def test_make_run_takes_a_phone_call_from_the_emulator_end_to_end(tmp_path, capsys):
    """The phone issue's own check: under `make run`, `curl -X POST localhost:7081/admin/sip/calls`
    gives an accepted, policy-bound, archived phone call that the audit command lists, shows,
    exports and verifies like a browser call (the stack makes the webhook secret and the salt)."""
    stack = Stack(tmp_path)
    try:
        storage = stack.wait_for("ready: storage ").removeprefix("ready: storage ")
        stack.wait_for("ready: gateway ")
        emulator = f"http://127.0.0.1:{stack.ports['EMULATOR_PORT']}"
        r = requests.post(
            emulator + "/admin/sip/calls",
            json={"from": "+15551230000", "to": "+15559870000", "say": ["hello"]},
            timeout=30,
        )
        assert r.status_code == 201, r.text
        call_id = r.json()["call_id"]
        archive = Archive(table_service_from_env({"AzureWebJobsStorage": storage}), "callevents", "callsessions")
        row = wait_until(
            lambda: (s := archive.find_session(call_id)) and s.get("state") == "ended" and s,
            60,
            0.2,
            "the phone call archived and ended\n" + "\n".join(stack.lines),
        )
        assert row["channel"] == "sip" and row["end_reason"] == "caller_hangup", row
        accepted = requests.get(f"{emulator}/admin/sip/calls/{call_id}", timeout=10).json()["accept_body"]
        assert accepted["instructions"] == "You are a helpful assistant."  # the example settings' policy
        tables = ["--connection-string", storage]
        for command in (["list"], ["show", call_id], ["export", call_id], ["verify", call_id]):
            capsys.readouterr()
            assert audit_main([*command, *tables]) == 0, command
            printed = capsys.readouterr()
            assert call_id in printed.out + printed.err, command  # export: the events out, the count on stderr
    finally:
        code = stack.terminate()
    assert code == 0, "\n".join(stack.lines)
    assert "5551230000" not in "\n".join(stack.lines)
