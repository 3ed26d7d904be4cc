"""The postprovision hook (infra/hooks/local_settings.py) run as azd runs it: a child process with a
fake `azd` on PATH that answers `azd env get-values`, writing into a copy of the project folder; and
its audit.env sourced by a real shell. The pure logic is tested in tests/unit/test_infra_local_settings.py."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HOOK = ROOT / "infra" / "hooks" / "local_settings.py"
VALUES = {
    "AZURE_ENV_NAME": "dev",
    "AZURE_OPENAI_ENDPOINT": "https://cog-abc123.openai.azure.com",
    "AZURE_OPENAI_DEPLOYMENT": "gpt-realtime-1.5",
    "AZURE_STORAGE_TABLE_ENDPOINT": "https://stabc123.table.core.windows.net",
    "SERVICE_WEB_URI": "https://stapp-abc123.azurestaticapps.net",
    "SERVICE_API_URI": "https://func-api-abc123.azurewebsites.net",
    "RATE_LIMIT_PER_MINUTE": "20",
    "LIMITS_TABLE": "limitsdev",
}


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """What the hook reads of the project, in a folder of its own (it writes .azure/ there)."""
    root = tmp_path / "project"
    (root / "realtime_gateway").mkdir(parents=True)
    (root / "infra").mkdir()
    shutil.copy2(ROOT / "realtime_gateway" / "settings.py", root / "realtime_gateway" / "settings.py")
    shutil.copy2(ROOT / "infra" / "main.parameters.json", root / "infra" / "main.parameters.json")
    return root


def fake_azd(folder: Path, json_output: bool) -> Path:
    """An `azd` that logs its arguments and prints the values: as JSON, or (an older azd without
    --output json) refusing that option and printing dotenv."""
    folder.mkdir(parents=True, exist_ok=True)
    log = folder / "azd.log"
    dotenv = "".join(f'{k}="{v}"\\n' for k, v in VALUES.items())
    script = folder / "azd"
    script.write_text(
        "#!/bin/sh\n"
        f'echo "$*" >> "{log}"\n'
        'case "$*" in\n'
        f"  *'--output json'*) {'printf %s ' + repr(json.dumps(VALUES)) if json_output else 'exit 1'} ;;\n"
        f"  *) printf '{dotenv}' ;;\n"
        "esac\n",
        encoding="utf-8",
    )
    script.chmod(0o755)
    return log


def run_hook(project: Path, path: str, env_name: str | None = "dev") -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in VALUES}
    env["PATH"] = path
    if env_name:
        env["AZURE_ENV_NAME"] = env_name
    return subprocess.run(
        [sys.executable, str(HOOK), "--root", str(project)], capture_output=True, text=True, env=env, timeout=60
    )


@pytest.mark.parametrize("json_output", [True, False], ids=["json", "dotenv"])
def test_hook_writes_both_files_from_azd(project, tmp_path, json_output):
    log = fake_azd(tmp_path / "bin", json_output)
    result = run_hook(project, f"{tmp_path / 'bin'}{os.pathsep}/usr/bin{os.pathsep}/bin")
    assert result.returncode == 0, result.stderr
    assert "--environment dev" in log.read_text()  # the environment azd ran the hook for, not the default one
    folder = project / ".azure" / "dev"
    values = json.loads((folder / "local.settings.json").read_text())["Values"]
    assert values["AZURE_OPENAI_ENDPOINT"] == VALUES["AZURE_OPENAI_ENDPOINT"]
    assert values["RATE_LIMIT_PER_MINUTE"] == "20"
    assert values["AzureWebJobsStorage"] == "UseDevelopmentStorage=true"
    assert f"page: {VALUES['SERVICE_WEB_URI']}" in result.stdout
    assert f"gateway: {VALUES['SERVICE_API_URI']}" in result.stdout

    # sourced by a real shell, audit.env gives the audit command its storage and table names
    shown = subprocess.run(
        [
            "bash",
            "-c",
            f"AzureWebJobsStorage=UseDevelopmentStorage=true; set -a; . '{folder / 'audit.env'}'; set +a; "
            f"{sys.executable} -c \"import os; print(repr(os.environ['AzureWebJobsStorage']), "
            "os.environ['AzureWebJobsStorage__tableServiceUri'], os.environ['LIMITS_TABLE'])\"",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.split() == ["''", VALUES["AZURE_STORAGE_TABLE_ENDPOINT"], "limitsdev"]


def test_hook_without_azd_reads_its_own_environment(project, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in VALUES}
    env.update(VALUES, PATH=str(empty))  # azd passes the environment's values to its hooks
    result = subprocess.run(
        [sys.executable, str(HOOK), "--root", str(project)], capture_output=True, text=True, env=env, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "azd not found" in result.stderr
    assert (project / ".azure" / "dev" / "audit.env").is_file()


def test_hook_before_provision_skips_the_files_but_does_not_fail(project, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in VALUES}
    env.update(AZURE_ENV_NAME="dev", PATH=str(empty))
    result = subprocess.run(
        [sys.executable, str(HOOK), "--root", str(project)], capture_output=True, text=True, env=env, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "skipped" in result.stdout
    assert not (project / ".azure" / "dev" / "local.settings.json").exists()


def test_hook_refuses_an_unusable_environment_name(project, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = run_hook(project, str(empty), env_name="../escape")
    assert result.returncode == 1
    assert not (project / ".azure").exists()
