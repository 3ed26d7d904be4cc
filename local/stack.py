"""`python -m local.stack` (what `make run` runs): Azurite, the realtime emulator and the local
functions host, wired together, with one `ready: <name> <url>` line per service.

Settings: local.settings.json.example `Values` < local.settings.json `Values` < the process
environment (the storage connection and, with the emulator, the endpoint and IDENTITY_* are wired). When
AZURE_OPENAI_ENDPOINT names a real resource (not loopback), the emulator is not started and
IDENTITY_* are not set, so the app uses the developer's signed-in credential.
CORS: as deployed by default (`platformCors=false`), the app answers its own preflights from
ALLOWED_ORIGINS (every route registers OPTIONS), so a page on another origin that the setting lists
works here as it will in Azure. Only when asked (`Host.CORS` in local.settings.json, or HOST_CORS)
does the host answer CORS itself, as App Service CORS (`siteConfig.cors`) would.
Ports: AZURITE_BLOB_PORT/AZURITE_QUEUE_PORT/AZURITE_TABLE_PORT (10000-10002, free ones if busy),
EMULATOR_PORT (7081), FUNCTIONS_PORT (7071). Azurite's data: STACK_DATA_DIR (.local)/azurite.

Lifecycle: SIGINT (Ctrl-C), SIGTERM and SIGHUP (the terminal closed) stop every child, all at once;
losing stdout (a closed pipe or terminal) stops the stack too, and shutdown never writes to a
stdout that is gone. Each child also gets PR_SET_PDEATHSIG, so a SIGKILLed launcher takes them along.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import signal
import socket
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

from local.azurite import ROOT, start_azurite
from local.processes import free_port, start_group, stop_group

LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
stopping = threading.Event()
_output_lock = threading.Lock()
_output_lost = False


def say(line: str, err: bool = False) -> None:
    """Print a line; when the terminal or pipe is gone (EIO, EPIPE) stop the stack instead of
    raising, and print nothing more, so shutdown cannot fail half-way on a write."""
    global _output_lost
    with _output_lock:
        if _output_lost:
            return
        try:
            print(line, file=sys.stderr if err else sys.stdout, flush=True)
        except (OSError, ValueError):
            _output_lost = True
            # The stale buffer would fail again at exit ("Exception ignored ..."): write nowhere.
            sys.stdout = sys.stderr = open(os.devnull, "w")  # noqa: SIM115 (for the process's life)
            stopping.set()


def port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def default_or_free(name: str, default: int) -> int:
    """An explicit port is used as given; a default one is swapped for a free one when busy."""
    if os.environ.get(name):
        return int(os.environ[name])
    return default if port_free(default) else free_port()


def required_port(name: str, default: int) -> int:
    port = int(os.environ.get(name) or default)
    if not port_free(port):
        raise SystemExit(f"port {port} is in use: stop what holds it or set {name}")
    return port


def user_settings() -> tuple[dict, dict]:
    """Values and Host of local.settings.json.example, then local.settings.json on top (if
    present), then the process environment on top of both."""
    values: dict[str, str] = {}
    host: dict = {}
    for name in ("local.settings.json.example", "local.settings.json"):
        path = ROOT / name
        if path.exists():
            data = json.loads(path.read_text(encoding="utf-8"))
            values.update({k: str(v) for k, v in (data.get("Values") or {}).items()})
            host.update(data.get("Host") or {})
            say(f"settings: {name}")
    for key in list(values) + ["AZURE_OPENAI_ENDPOINT", "AZURE_OPENAI_DEPLOYMENT", "ALLOWED_ORIGINS"]:
        if os.environ.get(key):
            values[key] = os.environ[key]
    return values, host


def is_real_endpoint(endpoint: str) -> bool:
    return bool(endpoint) and (urlparse(endpoint).hostname or "") not in LOOPBACK


class Interrupted(Exception):
    pass


class Child:
    """A subprocess in its own process group whose output is echoed with a prefix."""

    def __init__(self, name: str, args: list[str], env: dict):
        self.name = name
        self.ready_url: str | None = None
        self._ready = threading.Event()
        self.process = start_group(args, env, ROOT)
        threading.Thread(target=self._echo, daemon=True).start()

    def _echo(self) -> None:
        assert self.process.stdout is not None  # stdout=PIPE
        for line in self.process.stdout:
            line = line.rstrip("\n")
            if line.startswith("ready: ") and not self._ready.is_set():
                self.ready_url = line.split(" ", 2)[2]
                self._ready.set()
            say(f"[{self.name}] {line}")
        self._ready.set()

    def wait_ready(self, timeout: float, stopping: threading.Event) -> str:
        end = time.monotonic() + timeout
        while not self._ready.wait(0.1):
            if stopping.is_set():
                raise Interrupted()
            if time.monotonic() > end:
                break
        if self.ready_url is None:
            raise RuntimeError(f"{self.name} did not start (exit code {self.process.poll()})")
        return self.ready_url

    def stop(self) -> None:
        stop_group(self.process)


def wait_http(url: str, timeout: float = 30.0) -> None:
    end = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status < 500:
                    return
        except urllib.error.HTTPError as e:
            if e.code < 500:
                return
        except OSError:
            pass
        if time.monotonic() > end:
            raise RuntimeError(f"{url} did not answer within {timeout:.0f} s")
        time.sleep(0.1)


def stop_all(children: list[Child], azurite) -> None:
    """Signal every child at once and wait for them together: shutdown takes the slowest one's
    time, not the sum."""
    stops = [(child.name, child.stop) for child in children]
    if azurite:
        stops.append(("azurite", azurite.stop))

    def stop(name: str, fn) -> None:
        started = time.monotonic()
        fn()
        say(f"stopped {name} ({time.monotonic() - started:.1f} s)")

    threads = [threading.Thread(target=stop, args=item) for item in stops]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def main() -> int:
    for sig in STOP_SIGNALS:
        signal.signal(sig, lambda *_: stopping.set())
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)  # a closed stdout is an EPIPE error (handled), not death
    values, host_section = user_settings()
    children: list[Child] = []
    azurite = None
    try:
        local_dir = Path(os.environ.get("STACK_DATA_DIR") or ROOT / ".local")
        local_dir.mkdir(parents=True, exist_ok=True)
        azurite = start_azurite(
            default_or_free("AZURITE_BLOB_PORT", 10000),
            default_or_free("AZURITE_QUEUE_PORT", 10001),
            default_or_free("AZURITE_TABLE_PORT", 10002),
            data_dir=local_dir / "azurite",
            log_file=local_dir / "azurite.log",
        )
        settings = {**values, "AzureWebJobsStorage": azurite.connection_string}
        if not settings.get("OTEL_TRACE_SUMMARY"):  # one line per call trace in this output (docs/telemetry.md)
            settings["OTEL_TRACE_SUMMARY"] = "true"
        settings.setdefault("AZURE_OPENAI_DEPLOYMENT", "gpt-realtime")
        say(f"ready: storage {azurite.connection_string}")

        endpoint = values.get("AZURE_OPENAI_ENDPOINT", "")
        if is_real_endpoint(endpoint):
            # Their own resource: DefaultAzureCredential uses the signed-in developer, not IDENTITY_*.
            for key in ("IDENTITY_ENDPOINT", "IDENTITY_HEADER"):
                settings.pop(key, None)
            say(f"ready: azure-openai {endpoint}")
        else:
            identity_header = secrets.token_hex(16)
            # phone calls offline: the emulator signs its webhooks with the gateway's secret and sends
            # them to the local host (curl -X POST localhost:7081/admin/sip/calls -d '{"from":..,"to":..}')
            if not settings.get("SIP_WEBHOOK_SECRET"):
                settings["SIP_WEBHOOK_SECRET"] = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
            if not settings.get("SIP_CALLER_SALT"):
                settings["SIP_CALLER_SALT"] = "local-stack-caller-salt"  # offline only: not a secret here
            emulator = Child(
                "emulator",
                [sys.executable, "-m", "local.emulator"],
                {
                    **os.environ,
                    "PYTHONUNBUFFERED": "1",
                    "EMULATOR_PORT": str(required_port("EMULATOR_PORT", 7081)),
                    "EMULATOR_DEPLOYMENT": settings["AZURE_OPENAI_DEPLOYMENT"],
                    "EMULATOR_IDENTITY_HEADER": identity_header,
                    "SIP_WEBHOOK_URL": f"http://127.0.0.1:{os.environ.get('FUNCTIONS_PORT') or 7071}/api/sip/incoming",
                    "SIP_WEBHOOK_SECRET": settings["SIP_WEBHOOK_SECRET"],
                },
            )
            children.append(emulator)
            url = emulator.wait_ready(60, stopping)
            wait_http(url + "/_emulator/stats")
            settings.update(
                {
                    "AZURE_OPENAI_ENDPOINT": url,
                    "IDENTITY_ENDPOINT": url + "/msi/token",
                    "IDENTITY_HEADER": identity_header,
                }
            )
            say(f"ready: realtime-emulator {url}")

        port = required_port("FUNCTIONS_PORT", 7071)
        gateway = f"http://127.0.0.1:{port}"
        # The page the host serves is same-origin and browsers still send Origin on POST: always allow it.
        origins = [o.strip() for o in settings.get("ALLOWED_ORIGINS", "").split(",") if o.strip()]
        for own in (gateway, f"http://localhost:{port}"):
            if own not in origins:
                origins.append(own)
        settings["ALLOWED_ORIGINS"] = ",".join(origins)
        env = {**os.environ, **settings, "PYTHONUNBUFFERED": "1"}
        for key in ("IDENTITY_ENDPOINT", "IDENTITY_HEADER"):
            if key not in settings:
                env.pop(key, None)
        args = [
            sys.executable,
            "-m",
            "local.host",
            "--script-root",
            str(ROOT),
            "--port",
            str(port),
            "--static",
            str(ROOT / "static_web"),
        ]
        host_cors = str(host_section.get("CORS") or os.environ.get("HOST_CORS") or "").strip()
        if host_cors:
            args += ["--cors", host_cors]
            if host_section.get("CORSCredentials"):
                args.append("--cors-credentials")
            say(f"cors: the host answers preflights for {host_cors} (Host.CORS), as App Service CORS would")
        else:
            say(f"cors: the app answers preflights itself, for ALLOWED_ORIGINS={settings['ALLOWED_ORIGINS']}")
        host = Child("host", args, env)
        children.append(host)
        host.wait_ready(60, stopping)
        wait_http(gateway + "/")
        say(f"ready: gateway {gateway}")
        say(f"open {gateway}/")

        while not stopping.wait(0.5):
            for child in children:
                if child.process.poll() is not None:
                    say(f"{child.name} exited with {child.process.returncode}; stopping")
                    return 1
        return 0
    except Interrupted:
        return 0
    except (RuntimeError, OSError, TimeoutError) as exc:
        say(f"error: {exc}", err=True)
        return 1
    finally:
        # No signal may interrupt the stopping itself.
        for sig in STOP_SIGNALS:
            signal.signal(sig, signal.SIG_IGN)
        stop_all(children, azurite)


if __name__ == "__main__":
    sys.exit(main())
