"""Small helpers for the local stand-ins' processes: free ports, waiting for a listener, stopping
a child's whole process group (node and Python children would otherwise outlive a plain kill)."""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


# Under pytest-xdist each worker takes ports from its own band below the kernel's ephemeral range
# (32768 and up on Linux): a port the kernel hands one worker for bind(0) and that worker releases
# until its child binds it could otherwise be handed to another worker, or taken by an outgoing
# connection, in between. Only the test run's own processes use the bands (PORT_BAND_OWNER, set by
# tests/conftest.py, names the worker); the stack, the benches and children bind port 0.
PORT_BAND_START, PORT_BAND_SIZE, PORT_BANDS = 12000, 2500, 8
_band_lock = threading.Lock()
_band_next: dict[int, int] = {}


def free_port() -> int:
    band = _port_band()
    if band is None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]
    start = PORT_BAND_START + band * PORT_BAND_SIZE
    with _band_lock:
        for _ in range(PORT_BAND_SIZE):
            port = start + _band_next.get(band, 0)
            _band_next[band] = (_band_next.get(band, 0) + 1) % PORT_BAND_SIZE
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    continue  # held by someone else, or a test's child still lingering
                return port
    raise OSError(f"no free port in band {band} ({start}-{start + PORT_BAND_SIZE - 1})")


def _port_band() -> int | None:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    if os.environ.get("PORT_BAND_OWNER") != str(os.getpid()) or not worker.startswith("gw"):
        return None
    return int(worker[2:]) % PORT_BANDS


def wait_for_port(port: int, timeout: float = 30.0, host: str = "127.0.0.1") -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {host}:{port} after {timeout:.0f} s")


def die_with_parent() -> Callable[[], None] | None:
    """A preexec_fn after which the kernel SIGKILLs the child when its parent dies, even by SIGKILL,
    so a killed launcher leaves no child holding a port. Linux only; the death signal follows the
    forking thread, so spawn long-lived children from the main thread."""
    if not sys.platform.startswith("linux"):
        return None
    parent = os.getpid()
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up before fork: no dlopen in the child

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # the parent died between fork and prctl
            os._exit(1)

    return preexec


def start_group(args: list[str], env: Mapping[str, str], cwd: str | os.PathLike[str]) -> subprocess.Popen[str]:
    """A child in its own process group (stop_group stops it whole) that dies with its parent, its
    output and errors one text pipe to read."""
    return subprocess.Popen(
        args,
        cwd=cwd,
        env=dict(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
        start_new_session=True,
        preexec_fn=die_with_parent(),
    )


def ports_closed(ports: Iterable[int], host: str = "127.0.0.1") -> bool:
    for port in ports:
        with socket.socket() as s:
            if s.connect_ex((host, port)) == 0:
                return False
    return True


def stop_group(
    process: subprocess.Popen, grace: float = 10.0, ports: Iterable[int] = (), after_ports: float = 1.0
) -> int | None:
    """SIGTERM the process group started with start_new_session=True; SIGKILL after `grace` s, or
    `after_ports` s after all of `ports` stopped listening (its work is done; only the exit lingers)."""
    if process.poll() is None:
        ports = tuple(ports)
        try:
            os.killpg(process.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        end = time.monotonic() + grace
        while process.poll() is None and time.monotonic() < end:
            if ports and ports_closed(ports):
                end = min(end, time.monotonic() + after_ports)
                ports = ()
            time.sleep(0.02)
        if process.poll() is None:
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        process.wait()
    return process.returncode
