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

from hypothesis.configuration import set_hypothesis_home_dir

if not os.environ.get("HYPOTHESIS_STORAGE_DIRECTORY"):  # hypothesis's own override wins
    set_hypothesis_home_dir(Path(tempfile.gettempdir()) / "realtime-gateway-hypothesis")

pytest_plugins = [
    "tests.fixtures.azurite",
    "tests.fixtures.emulator",
    "tests.fixtures.host",
    "tests.fixtures.browser",
]
