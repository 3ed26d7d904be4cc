"""azure.yaml names the two services as azd expects, its hooks really work, and every deployment
setting is an azd variable.

PyYAML parses azure.yaml when installed; otherwise a strict reader for the subset azure.yaml uses
(nested mappings of plain scalars, comments) does, and fails on anything outside that subset.
The hooks run as subprocesses the way azd runs them: the web hook on a copy of static_web/, the
smoke check against a local HTTP server. main.parameters.json maps parameters to `${NAME}` or
`${NAME=default}` (azd's substitution: `azd env set NAME value` sets it).
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

from tests.unit.test_infra_bicep import NO_DEFAULT, declared_outputs, param_decls
from tests.unit.test_infra_settings import APP_SETTINGS

ROOT = Path(__file__).resolve().parents[2]
HOOK = ROOT / "infra" / "hooks" / "web_config.py"
SMOKE = ROOT / "infra" / "hooks" / "smoke_check.py"
MAIN_BICEP = ROOT / "infra" / "main.bicep"
PARAMS = param_decls(MAIN_BICEP)
AZD_REF = re.compile(r"^\$\{([A-Z][A-Z0-9_]*)(?:=([^}]*))?\}$")


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


# ---- the api service's postdeploy smoke check ---------------------------------------------------


def test_api_service_runs_the_smoke_check_after_deploy():
    api = load_azure_yaml()["services"]["api"]
    for platform in ("posix", "windows"):
        run = api["hooks"]["postdeploy"][platform]["run"]
        assert (ROOT / api["project"] / run.split()[1]).resolve() == SMOKE  # hooks run in the project folder


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


# ---- every deployment setting is an azd variable -------------------------------------------------

PARAMETERS_FILE = json.loads((ROOT / "infra" / "main.parameters.json").read_text(encoding="utf-8"))["parameters"]
# Parameters deliberately left out of main.parameters.json, with why.
NOT_AZD_VARIABLES = {
    # explicit resource names: empty derives them from the environment; set them in a parameters file
    "resourceGroupName",
    "apiServiceName",
    "apiUserAssignedIdentityName",
    "appServicePlanName",
    "storageAccountName",
    "logAnalyticsName",
    "applicationInsightsName",
    "openAiName",
    "staticWebAppName",
    "extraAppSettings",  # an object: azd variables are strings (azd converts them to int and bool only)
}
# App setting -> azd variable where the names differ, with why.
AZD_NAME_FOR_SETTING = {
    # Both names are outputs of main.bicep, which azd writes back into the environment after a provision:
    # as inputs they would feed a deployment's result into the next one.
    "AZURE_OPENAI_DEPLOYMENT": "AZURE_OPENAI_DEPLOYMENT_NAME",
    "ALLOWED_ORIGINS": "EXTRA_ALLOWED_ORIGINS",
    "AZURE_OPENAI_ENDPOINT": "AZURE_OPENAI_EXISTING_ENDPOINT",  # derived for a new resource; input for an existing one
}


def azd_mapping() -> dict[str, tuple[str, str | None]]:
    """parameter -> (azd variable, default or None)."""
    out = {}
    for name, entry in PARAMETERS_FILE.items():
        m = AZD_REF.match(entry["value"])
        assert m, f"{name}: {entry['value']!r} is not ${{NAME}} or ${{NAME=default}}"
        out[name] = (m.group(1), m.group(2))
    return out


def params_in(expr: str, seen: frozenset[str] = frozenset()) -> set[str]:
    """main.bicep parameters an expression depends on, through the variables it uses."""
    found = set()
    for ident in set(re.findall(r"\b[A-Za-z_][A-Za-z0-9_]*\b", expr)):
        if ident in PARAMS:
            found.add(ident)
        elif ident not in seen and (var := VARS.get(ident)) is not None:
            found |= params_in(var, seen | {ident})
    return found


def main_vars() -> dict[str, str]:
    """var name -> its expression (up to the next top-level declaration)."""
    src = MAIN_BICEP.read_text(encoding="utf-8")
    decls = list(re.finditer(r"^(param|var|resource|module|output|targetScope|@|//)", src, re.M))
    out = {}
    for i, m in enumerate(decls):
        v = re.match(r"var (\w+) = ", src[m.start() :])
        if v:
            end = decls[i + 1].start() if i + 1 < len(decls) else len(src)
            out[v.group(1)] = src[m.start() + v.end() : end]
    return out


VARS = main_vars()


def test_parameters_file_uses_azd_substitution_only():
    mapping = azd_mapping()
    names = [var for var, _ in mapping.values()]
    assert len(names) == len(set(names)), "one azd variable feeds two parameters"


def test_every_deployment_parameter_is_an_azd_variable():
    unmapped = set(PARAMS) - set(PARAMETERS_FILE) - NOT_AZD_VARIABLES
    assert not unmapped, f"parameters without an azd variable in main.parameters.json: {sorted(unmapped)}"
    assert not NOT_AZD_VARIABLES & set(PARAMETERS_FILE)
    assert set(PARAMS) >= NOT_AZD_VARIABLES


def test_every_parameter_behind_an_app_setting_is_an_azd_variable_of_that_name():
    mapping = azd_mapping()
    checked = 0
    for setting, expr in APP_SETTINGS.items():
        params = params_in(expr) - NOT_AZD_VARIABLES  # e.g. AZURE_OPENAI_ENDPOINT is derived from openAiName
        for param in params:
            assert param in mapping, f"{setting} depends on {param}, which has no azd variable"
        direct = re.fullmatch(r"(?:string\()?(\w+)\)?", expr)
        if direct and direct.group(1) in PARAMS:  # the setting is just this parameter
            assert mapping[direct.group(1)][0] == setting, (setting, mapping[direct.group(1)][0])
            checked += 1
        elif setting in AZD_NAME_FOR_SETTING:
            assert AZD_NAME_FOR_SETTING[setting] in {mapping[p][0] for p in params}, setting
        elif params - {"environmentName", "location"}:  # derived from several: one of them carries the name
            assert setting in {mapping[p][0] for p in params}, setting
    assert checked >= 34  # limits, budgets, prices, policy, audit, retention, names


def test_azd_defaults_are_the_bicep_defaults():
    """`${NAME=default}` must say what the Bicep default says: `azd env set` is then the only way to differ.

    A string parameter with an empty Bicep default takes `${NAME}` (azd passes nothing for an unset
    variable, so the Bicep default applies); one with a non-empty default needs `=default`, or azd
    would pass an empty string."""
    for param, (var, default) in azd_mapping().items():
        decl = PARAMS[param]
        bicep_default = decl["default"]
        if bicep_default is NO_DEFAULT:
            assert default is None, f"{param} is required; {var} must have no default"
            continue
        if default is None:
            assert bicep_default == "", f"{param}: ${{{var}}} unset would pass '' over the default {bicep_default!r}"
            continue
        if decl["type"] == "bool":
            assert default in ("true", "false") and (default == "true") == bicep_default, (param, default)
        elif decl["type"] == "int":
            assert int(default) == bicep_default, (param, default)
        else:
            assert default == bicep_default, (param, default, bicep_default)


def test_no_azd_input_is_also_an_output():
    # azd writes every output into the environment after a provision; an input of the same name would
    # then be pinned to the last deployment's value. AZURE_LOCATION is both on purpose (same value).
    inputs = {var for var, _ in azd_mapping().values()}
    assert inputs & declared_outputs(MAIN_BICEP) == {"AZURE_LOCATION"}


def test_new_settings_are_azd_variables_with_their_defaults():
    expected = {
        "TOKEN_ROUTE_ENABLED": "false",
        "BUDGET_HANGUP_RUNNING": "true",
        "DAILY_SPEND_LIMIT_USD": "20",
        "PRINCIPAL_DAILY_SPEND_LIMIT_USD": "0",
        "PRICE_RUNNING_CALL_PER_MINUTE": "0.10",
        "LIMIT_SLOT_SHARDS": "16",
        "CONTROL_RATE_PER_MINUTE": "120",
        "POLICY_ENFORCE": "true",
        "POLICY_MAX_VIOLATIONS": "3",
        "HEALTH_CACHE_SECONDS": "15",
        "SIGN_IN_ENABLED": "false",
        "AZURE_OPENAI_MODEL": "gpt-realtime-1.5",
        "AZURE_OPENAI_MODEL_VERSION": "2026-02-23",
    }
    by_var = {var: default for var, default in azd_mapping().values()}
    assert {k: by_var.get(k) for k in expected} == expected
    for var in ("AUTH_CLIENT_ID", "AUTH_TENANT_ID", "AUTH_ALLOWED_AUDIENCES", "EXTRA_ALLOWED_ORIGINS"):
        assert var in by_var and by_var[var] is None, var  # unset: the Bicep default ('') applies
