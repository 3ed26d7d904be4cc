"""azure.yaml names the two services as azd expects, and the web hook really rewrites and restores.

PyYAML parses azure.yaml when installed; otherwise a strict reader for the subset azure.yaml uses
(nested mappings of plain scalars, comments) does, and fails on anything outside that subset.
The hook runs as a subprocess on a copy of static_web/, the way azd runs it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HOOK = ROOT / "infra" / "hooks" / "web_config.py"


def parse_yaml_subset(text: str) -> dict:
    root: dict = {}
    stack: list[tuple[int, dict]] = [(-1, root)]
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.split(" #", 1)[0].rstrip() if not raw.lstrip().startswith("#") else ""
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip(" "))
        assert "\t" not in line[: indent + 1], f"line {lineno}: tab indentation"
        m = re.fullmatch(r"([A-Za-z0-9_.-]+):(?: (.*))?", line.strip())
        assert m, f"line {lineno}: outside the supported subset: {raw!r}"
        while indent <= stack[-1][0]:
            stack.pop()
        parent = stack[-1][1]
        key, value = m.group(1), m.group(2)
        assert key not in parent, f"line {lineno}: duplicate key {key}"
        if value is None or value == "":
            parent[key] = {}
            stack.append((indent, parent[key]))
        else:
            assert not value.startswith(("[", "{", "&", "*", "|", ">")), f"line {lineno}: unsupported {value!r}"
            parent[key] = value.strip("'\"")
    return root


def load_azure_yaml() -> dict:
    text = (ROOT / "azure.yaml").read_text(encoding="utf-8")
    try:
        import yaml  # type: ignore
    except ImportError:
        return parse_yaml_subset(text)
    return yaml.safe_load(text)


def test_subset_reader_rejects_what_it_does_not_understand():
    with pytest.raises(AssertionError):
        parse_yaml_subset("services:\n  - api\n")
    with pytest.raises(AssertionError):
        parse_yaml_subset("a: 1\na: 2\n")
    assert parse_yaml_subset("a:\n  b: c # note\n  d:\n    e: 'f'\n") == {"a": {"b": "c", "d": {"e": "f"}}}


def test_azure_yaml_services():
    doc = load_azure_yaml()
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", doc["name"])
    api, web = doc["services"]["api"], doc["services"]["web"]
    assert (api["project"], api["language"], api["host"]) == (".", "python", "function")
    assert web["host"] == "staticwebapp" and "language" not in web  # plain files, nothing to build
    assert (ROOT / web["project"] / "index.html").is_file()
    assert web["dist"] == "."
    for event, action in (("predeploy", "apply"), ("postdeploy", "restore")):
        for platform in ("posix", "windows"):
            run = web["hooks"][event][platform]["run"]
            script = run.split()[1]
            # hooks run in the service folder, so the script path is relative to it
            assert (ROOT / web["project"] / script).resolve() == HOOK
            assert run.split()[-1] == action


def test_azd_service_tags_match_service_names():
    api = (ROOT / "infra" / "app" / "api.bicep").read_text(encoding="utf-8")
    web = (ROOT / "infra" / "app" / "web.bicep").read_text(encoding="utf-8")
    assert "param serviceName string = 'api'" in api
    assert "'azd-service-name': 'web'" in web


def run_hook(site: Path, backup: Path, action: str, uri: str | None):
    env = {k: v for k, v in os.environ.items() if k != "SERVICE_API_URI"}
    if uri is not None:
        env["SERVICE_API_URI"] = uri
    return subprocess.run(
        [sys.executable, str(HOOK), action, "--dir", str(site), "--backup-dir", str(backup)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


@pytest.fixture
def site(tmp_path):
    site = tmp_path / "static_web"
    shutil.copytree(ROOT / "static_web", site)
    return site


def test_hook_points_page_at_gateway_and_restores(site, tmp_path):
    backup = tmp_path / "backup"
    before = {p.name: p.read_bytes() for p in site.iterdir() if p.is_file()}
    origin = "https://func-api-abc123.azurewebsites.net"

    result = run_hook(site, backup, "apply", origin + "/")
    assert result.returncode == 0, result.stderr
    config = json.loads((site / "config.json").read_text())
    assert config["gatewayUrl"] == origin
    # the other keys of config.json survive
    original = json.loads(before["config.json"])
    assert {k: v for k, v in config.items() if k != "gatewayUrl"} == {
        k: v for k, v in original.items() if k != "gatewayUrl"
    }
    csp = json.loads((site / "staticwebapp.config.json").read_text())["globalHeaders"]["Content-Security-Policy"]
    connect = [d.split() for d in csp.split(";") if d.strip().startswith("connect-src")]
    assert len(connect) == 1 and origin in connect[0] and "'self'" in connect[0]
    assert (site / "app.js").read_bytes() == before["app.js"]

    # a second apply (deploy retried) keeps the pristine backup and does not duplicate the origin
    assert run_hook(site, backup, "apply", origin).returncode == 0
    csp2 = json.loads((site / "staticwebapp.config.json").read_text())["globalHeaders"]["Content-Security-Policy"]
    assert csp2.count(origin) == 1

    result = run_hook(site, backup, "restore", None)
    assert result.returncode == 0, result.stderr
    after = {p.name: p.read_bytes() for p in site.iterdir() if p.is_file()}
    assert after == before
    assert not backup.exists()


@pytest.mark.parametrize("uri", [None, "", "http://func.azurewebsites.net", "https://func.azurewebsites.net/api"])
def test_hook_refuses_a_missing_or_odd_gateway_url(site, tmp_path, uri):
    before = (site / "config.json").read_bytes()
    result = run_hook(site, tmp_path / "backup", "apply", uri)
    assert result.returncode != 0
    assert "SERVICE_API_URI" in result.stderr
    assert (site / "config.json").read_bytes() == before


def test_hook_refuses_a_folder_that_is_not_the_site(tmp_path):
    result = run_hook(tmp_path, tmp_path / "backup", "apply", "https://x.azurewebsites.net")
    assert result.returncode != 0 and "index.html" in result.stderr
