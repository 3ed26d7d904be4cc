"""Shared fixtures: real components on loopback (Azurite, the realtime emulator, the local host).

Tiers: tests/unit (in process; its conftest.py refuses ports and subprocesses), tests/integration
(the stand-ins below, and the fixtures its conftest.py adds), tests/security and tests/e2e.
Tests write only under temporary directories (tmp_path, the e2e ARTIFACTS folder); hypothesis's
own storage (its example database and caches) goes to the system's temporary directory too,
instead of .hypothesis/ in the working tree.
"""

import os
import tempfile
from pathlib import Path

import pytest
from hypothesis.configuration import set_hypothesis_home_dir

if not os.environ.get("HYPOTHESIS_STORAGE_DIRECTORY"):  # hypothesis's own override wins
    set_hypothesis_home_dir(Path(tempfile.gettempdir()) / "realtime-gateway-hypothesis")

pytest_plugins = [
    "tests.fixtures.azurite",
    "tests.fixtures.emulator",
    "tests.fixtures.host",
]

# This process's free_port() takes ports from its xdist worker's band (local/processes.py); its
# children inherit the variable but not the pid, so they bind port 0 as usual.
os.environ["PORT_BAND_OWNER"] = str(os.getpid())


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """`make test` runs the suite on several workers (--dist loadgroup): each test file stays on one
    worker, in order, with its module fixtures; the e2e files share one worker and one Chromium."""
    for item in items:
        path = item.nodeid.split("::")[0]
        group = "browser" if path.startswith("tests/e2e/") else path
        item.add_marker(pytest.mark.xdist_group(group))
