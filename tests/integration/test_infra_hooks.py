"""azure.yaml's hooks really work, run as subprocesses the way azd runs them: the web hook
(infra/hooks/web_config.py) on a copy of static_web/, and the api service's postdeploy smoke check
(infra/hooks/smoke_check.py) against a loopback HTTP server standing in for the deployed app.
That azure.yaml names them is checked in tests/unit/test_infra_azd.py."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.infra import HOOK, ROOT, SMOKE


# ---- the web service's predeploy/postdeploy hook -------------------------------------------------
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


# ---- the api service's postdeploy smoke check ---------------------------------------------------
class HealthServer:
    """A loopback stand-in for the deployed app: answers /api/health with the next scripted status."""

    def __init__(self, statuses: list[int]):
        import http.server
        import threading

        self.statuses, self.hits = list(statuses), 0
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (the http.server name)
                outer.hits += 1
                status = outer.statuses.pop(0) if len(outer.statuses) > 1 else outer.statuses[0]
                ok = self.path == "/api/health"
                body = json.dumps(
                    {"status": "ok" if status == 200 else "unhealthy", "checks": {"storage": "ok" if ok else "?"}}
                ).encode()
                self.send_response(status if ok else 404)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/api/health"

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def run_smoke(*args: str, env_extra: dict[str, str] | None = None):
    env = {k: v for k, v in os.environ.items() if k not in ("SERVICE_API_URI", "SMOKE_CHECK_SECONDS")}
    env.update(env_extra or {})
    return subprocess.run([sys.executable, str(SMOKE), *args], capture_output=True, text=True, env=env, timeout=60)


@pytest.mark.parametrize(
    ("statuses", "code", "hits"),
    [
        ([200], 0, 1),
        ([503, 503, 200], 0, 3),  # starting up or roles still propagating, then healthy
        ([401], 1, 1),  # sign-in on and /api/health not excluded: no point in waiting
        ([503], 1, None),  # never healthy within the time given
    ],
)
def test_smoke_check_outcomes(statuses, code, hits):
    server = HealthServer(statuses)
    try:
        result = run_smoke("--url", server.url, "--seconds", "2", "--interval", "0.2")
    finally:
        server.close()
    assert result.returncode == code, result.stderr
    if hits is not None:
        assert server.hits == hits
    else:
        assert server.hits >= 2
    if code:
        assert "smoke_check:" in result.stderr
    if 401 in statuses:
        assert "excluded paths" in result.stderr


def test_smoke_check_reads_the_azd_environment():
    assert run_smoke(env_extra={"SMOKE_CHECK_SECONDS": "0"}).returncode == 0  # skipped, no URL needed
    missing = run_smoke()
    assert missing.returncode != 0 and "SERVICE_API_URI" in missing.stderr
    plain_http = run_smoke(env_extra={"SERVICE_API_URI": "http://func.azurewebsites.net"})
    assert plain_http.returncode != 0 and "SERVICE_API_URI" in plain_http.stderr
