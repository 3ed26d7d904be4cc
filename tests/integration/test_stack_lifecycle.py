"""The local stack's lifecycle (`python -m local.stack`, what `make run` runs): closing its terminal
(SIGHUP), SIGKILLing the launcher and losing its stdout each leave no child and no port behind;
Ctrl-C stops everything fast (Azurite once lingered ~10 s on its telemetry)."""

from __future__ import annotations

import fcntl
import os
import select
import signal
import subprocess
import sys
import termios
import threading
import time

import requests

from local.processes import free_port, ports_closed
from local.testing.host_process import ROOT

PORT_NAMES = ("AZURITE_BLOB_PORT", "AZURITE_QUEUE_PORT", "AZURITE_TABLE_PORT", "EMULATOR_PORT", "FUNCTIONS_PORT")


def descendants(pid: int) -> set[int]:
    """Every live process below `pid`, from /proc (zombies count as gone)."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if fields[0] != "Z":
                parents.setdefault(int(fields[1]), []).append(int(entry))
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


class Launcher:
    """The stack launcher on free ports, its output on a pseudo-terminal it controls (as under a
    terminal emulator) or on a pipe."""

    def __init__(self, tmp_path, terminal: bool):
        self.ports = {name: free_port() for name in PORT_NAMES}
        env = {
            **os.environ,
            **{k: str(v) for k, v in self.ports.items()},
            "STACK_DATA_DIR": str(tmp_path / "data"),
            "PYTHONUNBUFFERED": "1",
        }
        self.text = ""
        self.drop_output = threading.Event()
        self.master: int | None = None
        if terminal:
            self.master, slave = os.openpty()

            def controlling_terminal() -> None:  # after setsid: the pty becomes this session's terminal
                fcntl.ioctl(0, termios.TIOCSCTTY, 0)

            self.process = subprocess.Popen(
                [sys.executable, "-m", "local.stack"],
                cwd=ROOT,
                env=env,
                stdin=slave,
                stdout=slave,
                stderr=slave,
                start_new_session=True,
                preexec_fn=controlling_terminal,
            )
            os.close(slave)
            self.reader = threading.Thread(target=self._read, daemon=True)
        else:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "local.stack"],
                cwd=ROOT,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        """Reads with a timeout so that close_output() can close the terminal or pipe from this
        thread: a read blocked in another thread would keep it open (no SIGHUP, no EPIPE)."""
        fd = self.master if self.master is not None else self.process.stdout.fileno()  # type: ignore[union-attr]
        while not self.drop_output.is_set():
            if select.select([fd], [], [], 0.1)[0]:
                try:
                    chunk = os.read(fd, 4096)
                except OSError:  # EIO: the terminal's other side is gone
                    chunk = b""
                if not chunk:
                    break
                self.text += chunk.decode(errors="replace")
        self.drop_output.wait()
        if self.master is not None:
            os.close(fd)
        else:
            self.process.stdout.close()  # type: ignore[union-attr]

    def close_output(self) -> None:
        """The terminal window closes (SIGHUP to its session), or the pipe's reader goes away."""
        self.drop_output.set()
        self.reader.join(5)

    def wait_ready(self, timeout: float = 90) -> set[int]:
        end = time.monotonic() + timeout
        while "\nopen http" not in self.text:
            assert self.process.poll() is None, self.text
            assert time.monotonic() < end, self.text
            time.sleep(0.1)
        children = descendants(self.process.pid)
        assert len(children) >= 3, children  # Azurite's node, the emulator, the host
        return children

    def wait_gone(self, children: set[int], timeout: float = 15) -> float:
        """Seconds until the launcher, every child and every port are gone."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            self.process.poll()
            left = [pid for pid in children | {self.process.pid} if alive(pid)]
            if not left and ports_closed(self.ports.values()):
                seconds = time.monotonic() - started
                self.process.wait(5)  # a zombie is not alive(), but its poll() above may predate the exit
                return seconds
            time.sleep(0.02)
        return float("inf")

    def kill_all(self, children: set[int]) -> None:
        """Cleanup when a test failed: nothing of ours may outlive it."""
        for pid in children | {self.process.pid}:
            try:
                os.killpg(pid, signal.SIGKILL)
            except OSError:
                pass
        self.process.wait(10)
        self.close_output()


def report(what: str, seconds: float, children: set[int], launcher: Launcher) -> None:
    left = [pid for pid in children if alive(pid)]
    held = [port for port in launcher.ports.values() if not ports_closed([port])]
    print(f"\n{what}: stopped in {seconds:.2f} s; processes left {len(left)}; ports held {len(held)}")
    assert not left and not held, (left, held, launcher.text[-2000:])


def test_closing_the_terminal_stops_every_child_and_frees_every_port(tmp_path):
    launcher = Launcher(tmp_path, terminal=True)
    children: set[int] = set()
    try:
        children = launcher.wait_ready()
        launcher.close_output()
        seconds = launcher.wait_gone(children)
        report("closed terminal (SIGHUP)", seconds, children, launcher)
        assert seconds < 5
    finally:
        launcher.kill_all(children)


def test_a_sigkilled_launcher_takes_its_children_along(tmp_path):
    launcher = Launcher(tmp_path, terminal=False)
    children: set[int] = set()
    try:
        children = launcher.wait_ready()
        launcher.process.kill()  # no chance to clean up: the kernel's parent-death signal must do it
        seconds = launcher.wait_gone(children)
        report("SIGKILLed launcher", seconds, children, launcher)
    finally:
        launcher.kill_all(children)


def test_ctrl_c_stops_the_stack_fast_and_a_lost_stdout_stops_it_too(tmp_path):
    launcher = Launcher(tmp_path, terminal=False)
    children: set[int] = set()
    try:
        children = launcher.wait_ready()
        os.kill(launcher.process.pid, signal.SIGINT)
        seconds = launcher.wait_gone(children)
        assert launcher.process.returncode == 0, launcher.text[-2000:]
        report("Ctrl-C (SIGINT)", seconds, children, launcher)
        assert seconds < 5  # ~0.2 s measured; generous for a loaded machine
    finally:
        launcher.kill_all(children)

    # The reader of its stdout goes away (`make run | head`): the next line it prints fails with
    # EPIPE, and that must stop the stack, not kill the launcher half-way through shutdown.
    launcher = Launcher(tmp_path, terminal=False)
    children = set()
    try:
        children = launcher.wait_ready()
        launcher.close_output()
        gateway = f"http://127.0.0.1:{launcher.ports['FUNCTIONS_PORT']}"
        try:  # the host logs it: a line to print
            requests.get(gateway + "/api/health", timeout=30)
        except requests.ConnectionError:
            pass  # another line (a queue poll, a timer) hit EPIPE first: the stack is already stopping
        seconds = launcher.wait_gone(children)
        assert launcher.process.returncode == 0
        report("lost stdout", seconds, children, launcher)
    finally:
        launcher.kill_all(children)
