"""Checkov's Bicep parser (pycep, in .venv-checkov) reads every template under infra/: run in a child
process, since checkov's pins conflict with the test venv's (Makefile: infra-scan)."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.fixtures.infra import BICEP_FILES, ROOT

CHECKOV_PYTHON = ROOT / ".venv-checkov" / "bin" / "python"  # `make infra-scan` creates it (checkov and its pycep)
PYCEP_PARSE = """
import json, sys
from pathlib import Path
from pycep import BicepParser
failed = {}
for name in sys.argv[1:]:
    try:
        BicepParser().parse(file_path=Path(name))
    except Exception as exc:  # lark's errors name the line and column
        failed[name] = f"{type(exc).__name__}: {str(exc)[:400]}"
print(json.dumps(failed))
"""


def test_checkovs_bicep_parser_reads_every_template():
    """A real parser where one exists here: pycep, the parser checkov scans Bicep with. A file it cannot
    parse would not be scanned at all, so `make infra-scan` could pass without looking (pycep also lags
    the language: no lambdas, for instance, which is why the templates split lists without them)."""
    if not CHECKOV_PYTHON.exists():
        pytest.skip("no .venv-checkov (make infra-scan creates it)")
    probe = subprocess.run([str(CHECKOV_PYTHON), "-c", "import pycep"], capture_output=True, timeout=60)
    if probe.returncode:
        pytest.skip("pycep is not importable from .venv-checkov")
    result = subprocess.run(
        [str(CHECKOV_PYTHON), "-c", PYCEP_PARSE, *map(str, BICEP_FILES)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {}
