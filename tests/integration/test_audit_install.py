"""The auditor installs the command alone, from the project's metadata, into a fresh environment, and
it reads the archive: what `pipx install .` gives a person who has none of this repository's venvs."""

from __future__ import annotations

import secrets
import shutil
import subprocess
import venv
from pathlib import Path

from realtime_gateway.archive.store import Archive
from realtime_gateway.archive.tables import table_service_from_env

ROOT = Path(__file__).resolve().parents[2]


def run(*args, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([*args], capture_output=True, text=True, timeout=600, cwd=cwd)


def test_the_audit_command_installs_alone_and_lists_sessions(tmp_path, azurite):
    # a copy of what the package is made of: the build writes its build/ and egg-info beside it
    source = tmp_path / "source"
    source.mkdir()
    shutil.copy(ROOT / "pyproject.toml", source)
    shutil.copytree(
        ROOT / "realtime_gateway", source / "realtime_gateway", ignore=shutil.ignore_patterns("__pycache__")
    )
    env_dir = tmp_path / "auditor"
    venv.create(env_dir, with_pip=True)
    # from tmp_path, not the repository: nothing of it on the path but what was installed
    pip = run(
        env_dir / "bin" / "python", "-m", "pip", "install", "-q", "--disable-pip-version-check", source, cwd=tmp_path
    )
    assert pip.returncode == 0, pip.stderr[-3000:]
    audit = env_dir / "bin" / "realtime-audit"
    help_ = run(audit, "--help", cwd=tmp_path)
    assert help_.returncode == 0 and help_.stdout.startswith("usage: realtime-audit"), help_.stderr

    suffix = secrets.token_hex(4)
    storage = {"AzureWebJobsStorage": azurite.connection_string}
    archive = Archive(table_service_from_env(storage), f"ev{suffix}", f"se{suffix}")
    archive.ensure_tables()
    archive.open_session("rtc_installed", "20261201", {"state": "ended", "created_at": "2026-12-01T10:00:00+00:00"})
    # the storage options after the subcommand, as a person types them
    listed = run(
        audit,
        *("sessions", "--from", "2026-12-01", "--to", "2026-12-02"),
        *("--events-table", f"ev{suffix}", "--sessions-table", f"se{suffix}"),
        *("--connection-string", azurite.connection_string),
        cwd=tmp_path,
    )
    assert listed.returncode == 0 and "rtc_installed" in listed.stdout, listed.stderr + listed.stdout
