"""Helpers shared by the tests (`tests/fixtures/*` wraps them as pytest fixtures) and the
benchmarks (`bench/`): the local host as a subprocess, the fixture app, a real WebRTC offer."""
