"""The unit tier: in process, with no port and no subprocess (`make unit`, well under a minute).

A test that needs the emulator, Azurite, the local host, a browser, an aiortc peer, a loopback
server or a child process belongs in tests/integration. The guard below keeps this tier honest:
during each unit test's setup, call and teardown (fixtures included, session-scoped ones too), a
socket bind or connect other than AF_UNIX (asyncio's own wake-up pipe) or a subprocess spawn fails
the test loudly, even when the code under test catches the error.
"""

from __future__ import annotations

import contextlib
import platform
import socket
import subprocess

import pytest

from tests.fixtures.otel import otel  # noqa: F401 (a fixture, used by name)

# The stand-ins of tests/fixtures: each one is a process or a port.
STAND_INS = {
    "azurite",
    "emulator",
    "host_factory",
    "gateway_stack",
    "gateway_stack_factory",
    "playwright_instance",
    "browser",
}

# platform.platform() runs `uname -p` once per process and caches it; azure-identity calls it when
# first imported. Done here, before any guard, so that import is not mistaken for a test's subprocess.
platform.platform()


class UnitTierViolation(RuntimeError):
    """Not an OSError, so code that handles network failures does not mistake it for one."""


def _violation(item: pytest.Item, what: str) -> str:
    return (
        f"{item.nodeid}: {what}. Unit tests run in process with no port and no subprocess; "
        "a test that needs one belongs in tests/integration/."
    )


@contextlib.contextmanager
def _no_port_and_no_subprocess(item: pytest.Item):
    seen: list[str] = []

    def refuse(what: str):
        seen.append(_violation(item, what))
        raise UnitTierViolation(seen[-1])

    def guarded(verb: str, real):
        def method(self, address, *args):
            if self.family == socket.AF_UNIX:
                return real(self, address, *args)
            return refuse(f"socket {verb} {address!r}")

        return method

    def no_spawn(self, args, *rest, **kwargs):
        refuse(f"subprocess {args!r}")

    with pytest.MonkeyPatch.context() as mp:
        for verb in ("bind", "connect", "connect_ex"):
            mp.setattr(socket.socket, verb, guarded(verb, getattr(socket.socket, verb)))
        mp.setattr(subprocess.Popen, "__init__", no_spawn)
        yield seen


def _guarded_phase(item: pytest.Item):
    with _no_port_and_no_subprocess(item) as seen:
        result = yield
    if seen:  # the code under test caught the exception: fail anyway
        raise UnitTierViolation("\n".join(seen))
    return result


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item):
    used = sorted(STAND_INS & set(getattr(item, "fixturenames", ())))
    if used:
        raise UnitTierViolation(_violation(item, f"it uses the fixture(s) {', '.join(used)}"))
    return (yield from _guarded_phase(item))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item):
    return (yield from _guarded_phase(item))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem):
    if nextitem is None:
        # the run's last test: its teardown also stops the session's stand-ins (Azurite, the emulator)
        # that earlier integration tests on this worker (make test's xdist workers mix tiers) started
        return (yield)
    return (yield from _guarded_phase(item))
