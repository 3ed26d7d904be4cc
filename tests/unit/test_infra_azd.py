"""azure.yaml names the two services and their hooks as azd expects, and every deployment setting
is an azd variable.

PyYAML parses azure.yaml when installed; otherwise a strict reader for the subset azure.yaml uses
(nested mappings of plain scalars, comments) does, and fails on anything outside that subset.
The hooks themselves run as subprocesses, the way azd runs them, in tests/integration/test_infra_hooks.py.
main.parameters.json maps parameters to `${NAME}` or `${NAME=default}` (azd's substitution:
`azd env set NAME value` sets it).
"""

from __future__ import annotations

import json
import re

import pytest

from tests.fixtures.infra import APP_SETTINGS, HOOK, NO_DEFAULT, ROOT, SMOKE, declared_outputs, param_decls

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


# ---- the api service's postdeploy smoke check ---------------------------------------------------


def test_api_service_runs_the_smoke_check_after_deploy():
    api = load_azure_yaml()["services"]["api"]
    for platform in ("posix", "windows"):
        run = api["hooks"]["postdeploy"][platform]["run"]
        assert (ROOT / api["project"] / run.split()[1]).resolve() == SMOKE  # hooks run in the project folder


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
    "keyVaultName",
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
        "SIP_ENABLED": "false",
        "AZURE_OPENAI_MODEL": "gpt-realtime-1.5",
        "AZURE_OPENAI_MODEL_VERSION": "2026-02-23",
    }
    by_var = {var: default for var, default in azd_mapping().values()}
    assert {k: by_var.get(k) for k in expected} == expected
    for var in ("AUTH_CLIENT_ID", "AUTH_TENANT_ID", "AUTH_ALLOWED_AUDIENCES", "EXTRA_ALLOWED_ORIGINS"):
        assert var in by_var and by_var[var] is None, var  # unset: the Bicep default ('') applies
