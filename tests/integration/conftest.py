"""The integration tier: real stand-ins on loopback (Azurite, the realtime emulator, the local
functions host as a subprocess, aiortc peers), started by the fixtures of tests/fixtures.

The fixtures below are shared by several files of this tier only; those every tier may use are
registered in tests/conftest.py."""

from tests.fixtures.listener import archive, process, settings, upstream  # noqa: F401 (fixtures, used by name)
from tests.fixtures.otel import otel  # noqa: F401 (a fixture, used by name)
