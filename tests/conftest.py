"""Shared fixtures: real components on loopback (Azurite, the realtime emulator, the local host)."""

pytest_plugins = [
    "tests.fixtures.azurite",
    "tests.fixtures.emulator",
    "tests.fixtures.host",
    "tests.fixtures.browser",
]
