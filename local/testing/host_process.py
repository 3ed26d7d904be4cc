"""The local functions host as a subprocess (each app in its own process and environment), the
settings that wire this repo's app to an emulator and Azurite, and helpers for the host's own
tests on the fixture app (tests/fixture_app)."""

from __future__ import annotations

import base64
import json
import os
import secrets
import shutil
import sys
import threading
import time
from pathlib import Path

from azure.core.exceptions import ResourceExistsError
from azure.storage.queue import QueueClient, TextBase64EncodePolicy

from local.processes import start_group, stop_group

ROOT = Path(__file__).resolve().parents[2]
FIXTURE_APP = ROOT / "tests" / "fixture_app"
# Only what a process needs to run; app settings come from the caller, never from its shell.
PASS_THROUGH = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "TZ")


def make_keys() -> dict:
    return {"master": secrets.token_urlsafe(24), "host": {"default": secrets.token_urlsafe(24)}, "functions": {}}


class HostProcess:
    """`python -m local.host` on `script_root` with exactly `settings` as its app settings.

    FUNCTIONS_KEYS is generated when not given (readable as `.keys`), so no key file is written.
    """

    def __init__(
        self,
        script_root: Path,
        settings: dict,
        static_dir: Path | None = None,
        port: int | None = None,
        ready_timeout: float = 60.0,
    ):
        self.script_root = Path(script_root)
        self.settings = dict(settings)
        self.settings.setdefault("FUNCTIONS_KEYS", json.dumps(make_keys()))
        self.keys = json.loads(self.settings["FUNCTIONS_KEYS"]) if self.settings["FUNCTIONS_KEYS"] else None
        env = {k: os.environ[k] for k in PASS_THROUGH if k in os.environ}
        env.update({"PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1"}, **self.settings)
        cmd = [sys.executable, "-m", "local.host", "--script-root", str(self.script_root), "--port", str(port or 0)]
        if static_dir:
            cmd += ["--static", str(static_dir)]
        self._lines: list[str] = []
        self._lock = threading.Condition()
        started = time.monotonic()
        self.process = start_group(cmd, env, ROOT)  # a killed test run or bench leaves no host holding a port
        self._drainer = threading.Thread(target=self._drain, daemon=True)
        self._drainer.start()
        self.url = self._wait_ready(ready_timeout)
        self.startup_seconds = time.monotonic() - started

    def _drain(self) -> None:
        assert self.process.stdout is not None  # stdout=PIPE
        for line in self.process.stdout:
            with self._lock:
                self._lines.append(line.rstrip("\n"))
                self._lock.notify_all()
        with self._lock:
            self._lock.notify_all()

    def _wait_ready(self, timeout: float) -> str:
        end = time.monotonic() + timeout
        with self._lock:
            while True:
                for line in self._lines:
                    if line.startswith("ready: gateway "):
                        return line.split(" ", 2)[2]
                if self.process.poll() is not None and not self._drainer.is_alive():
                    raise RuntimeError(f"host exited with {self.process.returncode}:\n{self.logs}")
                left = end - time.monotonic()
                if left <= 0:
                    self.stop()
                    raise TimeoutError(f"host not ready after {timeout:.0f} s:\n{self.logs}")
                self._lock.wait(min(left, 0.2))

    @property
    def logs(self) -> str:
        return "\n".join(self._lines)

    def wait_for_log(self, text: str, timeout: float = 20.0, count: int = 1) -> str:
        end = time.monotonic() + timeout
        with self._lock:
            while sum(text in line for line in self._lines) < count:
                left = end - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{text!r} x{count} not logged within {timeout} s:\n{self.logs}")
                self._lock.wait(min(left, 0.2))
        return self.logs

    def stop(self) -> int | None:
        return stop_group(self.process, grace=15)


# --- this repo's app on the local host ---------------------------------------------------------
def gateway_settings(emulator, azurite, port: int, origins=(), **overrides) -> dict:
    """App settings for this repo's app served on `port`, wired to an emulator and Azurite, with
    its own listener queue and archive tables; `overrides` (any names) go on top."""
    suffix = secrets.token_hex(4)
    settings = {
        "AzureWebJobsStorage": azurite.connection_string,
        "IDENTITY_ENDPOINT": emulator.identity_endpoint,
        "IDENTITY_HEADER": emulator.identity_header,
        "AZURE_OPENAI_ENDPOINT": emulator.url,
        "AZURE_OPENAI_DEPLOYMENT": getattr(emulator, "deployment", "gpt-realtime"),
        "ALLOWED_ORIGINS": ",".join([f"http://127.0.0.1:{port}", *origins]),
        "LISTENER_QUEUE": f"call-listener-{suffix}",
        "ARCHIVE_EVENTS_TABLE": f"callevents{suffix}",
        "ARCHIVE_SESSIONS_TABLE": f"callsessions{suffix}",
        "LIMITS_TABLE": f"gatewaylimits{suffix}",  # each app its own rate windows and slots
        "FUNCTIONS_KEYS": json.dumps(make_keys()),
    }
    settings.update({k: str(v) for k, v in overrides.items()})
    return settings


class GatewayStack:
    def __init__(self, host: HostProcess, emulator, azurite, settings: dict):
        self.host, self.emulator, self.azurite, self.settings = host, emulator, azurite, settings
        self.url = host.url
        self.keys = host.keys

    @property
    def logs(self) -> str:
        return self.host.logs


# --- the host's own tests on the fixture app ---------------------------------------------------
def fixture_settings(azurite, tmp_path: Path, **extra) -> dict:
    suffix = secrets.token_hex(4)
    settings = {
        "AzureWebJobsStorage": azurite.connection_string,
        "FAIL_QUEUE": f"fail-{suffix}",
        "RELAY_QUEUE": f"relay-{suffix}",
        "OUT_QUEUE": f"out-{suffix}",
        "SLOW_QUEUE": f"slow-{suffix}",
        "RECORD_FILE": str(tmp_path / "records.jsonl"),
        "TICK_SCHEDULE": "0 0 0 1 1 *",  # the timer's schedule: once a year unless a test asks
    }
    settings.update({k: str(v) for k, v in extra.items()})
    return settings


def copy_app(tmp_path: Path, **queue_options) -> Path:
    """The fixture app with host.json changed (e.g. messageEncoding none, another routePrefix)."""
    root = tmp_path / "app"
    shutil.copytree(FIXTURE_APP, root, ignore=shutil.ignore_patterns("__pycache__", ".local"))
    host = json.loads((root / "host.json").read_text())
    route_prefix = queue_options.pop("routePrefix", None)
    if route_prefix is not None:
        host["extensions"]["http"]["routePrefix"] = route_prefix
    host["extensions"]["queues"].update(queue_options)
    (root / "host.json").write_text(json.dumps(host))
    return root


def queue(azurite, name: str, base64_text: bool = False) -> QueueClient:
    client = QueueClient.from_connection_string(
        azurite.connection_string, name, message_encode_policy=TextBase64EncodePolicy() if base64_text else None
    )
    try:
        client.create_queue()
    except ResourceExistsError:
        pass
    return client


def records(settings: dict, fn: str | None = None) -> list[dict]:
    path = Path(settings["RECORD_FILE"])
    if not path.exists():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in rows if fn is None or r["fn"] == fn]


def wait_until(predicate, timeout: float = 20.0, interval: float = 0.1, what: str = "condition"):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"{what} not met within {timeout} s")


def drain_texts(client: QueueClient, expected: int, timeout: float = 20.0) -> list[str]:
    """Receive and delete messages until `expected` arrived; returns their raw (undecoded) text."""
    got: list[str] = []

    def more():
        for m in client.receive_messages(max_messages=32, visibility_timeout=30):
            got.append(m.content)
            client.delete_message(m)
        return len(got) >= expected

    wait_until(more, timeout, what=f"{expected} messages on {client.queue_name}")
    return got


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()
