"""The app settings the bicep gives the function app cover what the code needs in Azure.

The oracle is the code itself: `load_settings({})` names every setting without a safe default,
function_app.py names the `%SETTING%` its bindings resolve, and table_service/identity need the
identity-based storage group. The bicep app settings are read from the `KEY: value` lines of the
objects that feed `appSettingsKeyValuePairs` (main.bicep's gatewayAppSettings, api.bicep's identitySettings).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from realtime_gateway.settings import QUEUE_NAME, TABLE_NAME, SettingsError, load_settings

ROOT = Path(__file__).resolve().parents[2]
MAIN = (ROOT / "infra" / "main.bicep").read_text(encoding="utf-8")
API = (ROOT / "infra" / "app" / "api.bicep").read_text(encoding="utf-8")


def object_keys(src: str, var_name: str) -> dict[str, str]:
    """KEY -> value expression of the object literal assigned to `var <var_name>`."""
    start = re.search(rf"^var {var_name} = (union\()?\{{", src, re.M)
    assert start, f"var {var_name} not found"
    keys, depth = {}, 1
    for line in src[start.end() :].splitlines()[1:]:
        if depth == 1:
            m = re.match(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*:\s*(.+?)\s*(//.*)?$", line)
            if m:
                keys[m.group(1)] = m.group(2)
        depth += line.count("{") - line.count("}")
        if depth <= 0:
            return keys
    raise AssertionError(f"var {var_name} not closed")


APP_SETTINGS = {**object_keys(MAIN, "gatewayAppSettings"), **object_keys(API, "identitySettings")}


def param_default(name: str) -> str:
    m = re.search(rf"^param {name} string = '([^']*)'", MAIN, re.M)
    assert m, f"param {name} with a literal default not found"
    return m.group(1)


def test_both_setting_objects_reach_the_function_app():
    assert "appSettings: gatewayAppSettings" in MAIN
    assert "appSettingsKeyValuePairs: union(appSettings, identitySettings)" in API


def required_by_settings_loader() -> set[str]:
    with pytest.raises(SettingsError) as err:
        load_settings({})
    # The loader names each missing setting in capitals (AZURE_OPENAI_ENDPOINT (or ...) is required).
    return {
        m for m in re.findall(r"\b([A-Z][A-Z0-9_]{3,})\b", str(err.value)) if m != "AZURE_OPENAI_RESOURCE"
    }  # an alternative spelling of the endpoint


def test_settings_without_safe_default_are_set():
    required = required_by_settings_loader()
    assert {"AZURE_OPENAI_ENDPOINT", "AZURE_OPENAI_DEPLOYMENT"} <= required
    assert required <= APP_SETTINGS.keys(), required - APP_SETTINGS.keys()


def test_binding_expressions_resolve():
    bindings = set(re.findall(r"%([A-Za-z0-9_]+)%", (ROOT / "function_app.py").read_text(encoding="utf-8")))
    assert "LISTENER_QUEUE" in bindings
    assert bindings <= APP_SETTINGS.keys(), bindings - APP_SETTINGS.keys()


def test_identity_based_storage_and_openai_settings():
    for name in (
        "AzureWebJobsStorage__credential",
        "AzureWebJobsStorage__clientId",
        "AzureWebJobsStorage__blobServiceUri",
        "AzureWebJobsStorage__queueServiceUri",
        "AzureWebJobsStorage__tableServiceUri",
        "AZURE_CLIENT_ID",
        "APPLICATIONINSIGHTS_AUTHENTICATION_STRING",
        "ALLOWED_ORIGINS",
    ):
        assert name in APP_SETTINGS, name
    assert APP_SETTINGS["AzureWebJobsStorage__credential"] == "'managedidentity'"
    assert APP_SETTINGS["AzureWebJobsStorage__clientId"] == APP_SETTINGS["AZURE_CLIENT_ID"] == "identityClientId"
    assert "Authorization=AAD" in APP_SETTINGS["APPLICATIONINSIGHTS_AUTHENTICATION_STRING"]


def test_settings_that_would_defeat_identity_or_break_flex_are_absent():
    everything = MAIN + API
    # A plain AzureWebJobsStorage wins silently over the __ group; an api key bypasses identity.
    assert "AzureWebJobsStorage" not in APP_SETTINGS
    assert not re.search(r"^\s*'?AzureWebJobsStorage'?\s*:", everything, re.M)
    assert "AZURE_OPENAI_API_KEY" not in everything
    # Flex Consumption rejects these (runtime and version come from functionAppConfig.runtime).
    for name in (
        "FUNCTIONS_WORKER_RUNTIME",
        "FUNCTIONS_EXTENSION_VERSION",
        "WEBSITE_RUN_FROM_PACKAGE",
        "WEBSITE_CONTENTAZUREFILECONNECTIONSTRING",
        "SCM_DO_BUILD_DURING_DEPLOYMENT",
    ):
        assert name not in everything, name


def test_default_names_pass_the_apps_own_validation():
    queue = param_default("listenerQueueName")
    assert QUEUE_NAME.match(queue) and QUEUE_NAME.match(f"{queue}-poison")
    assert TABLE_NAME.match(param_default("eventsTableName"))
    assert TABLE_NAME.match(param_default("sessionsTableName"))
    # and the loader accepts them together with the deployed endpoint shape
    settings = load_settings(
        {
            "AZURE_OPENAI_ENDPOINT": "https://cog-abc123.openai.azure.com",
            "AZURE_OPENAI_DEPLOYMENT": param_default("openAiDeploymentName"),
            "LISTENER_QUEUE": queue,
            "ARCHIVE_EVENTS_TABLE": param_default("eventsTableName"),
            "ARCHIVE_SESSIONS_TABLE": param_default("sessionsTableName"),
            "ALLOWED_ORIGINS": "https://stapp-abc123.azurestaticapps.net,https://example.org",
        }
    )
    assert settings.listener_queue == "call-listener"
    assert settings.websocket_endpoint == "wss://cog-abc123.openai.azure.com"


def test_endpoint_expression_has_the_shape_the_loader_accepts():
    # 'https://${openAiAccountName}.openai.azure.com': scheme and host only, as settings.py requires.
    m = re.search(r"^var openAiEndpoint = .*'(https://\$\{\w+\}\.openai\.azure\.com)'", MAIN, re.M)
    assert m, "new-account endpoint expression changed"
    assert APP_SETTINGS["AZURE_OPENAI_ENDPOINT"] == "openAiEndpoint"


def test_app_insights_export_uses_the_identity_the_telemetry_loader_reads():
    """App Insights has local auth disabled: the app's exporter needs an Entra token from the same
    identity that holds Monitoring Metrics Publisher (test_infra_security), named in the auth string."""
    from realtime_gateway.settings import telemetry_settings

    conn = APP_SETTINGS["APPLICATIONINSIGHTS_CONNECTION_STRING"]
    assert conn == "applicationInsights.properties.ConnectionString"
    auth = APP_SETTINGS["APPLICATIONINSIGHTS_AUTHENTICATION_STRING"].strip("'").replace("${identityClientId}", "CID")
    ts = telemetry_settings(
        {
            "APPLICATIONINSIGHTS_CONNECTION_STRING": "InstrumentationKey=x;IngestionEndpoint=https://e/",
            "APPLICATIONINSIGHTS_AUTHENTICATION_STRING": auth,
            "OTEL_SERVICE_NAME": "api",
        }
    )
    assert ts.aad_client_id == "CID" and ts.connection_string and ts.service_name == "api"
    assert "OTEL_SERVICE_NAME" in APP_SETTINGS


def test_limit_and_price_settings_are_passed_through():
    # every limits/price setting of local.settings.json.example reaches the app, except the test clock
    import json

    example = json.loads((ROOT / "local.settings.json.example").read_text(encoding="utf-8"))["Values"]
    wanted = {
        n
        for n in example
        if n.startswith(("PRICE_", "RATE_LIMIT", "DAILY_", "PRINCIPAL_DAILY", "CLIENT_IP", "BUDGET_"))
        or n in ("MAX_ACTIVE_CALLS", "LIMITS_TABLE")
    }
    prices = set(re.findall(r"^\s*(PRICE_[A-Z_]+):", MAIN, re.M))
    assert len(wanted) >= 17
    assert wanted <= APP_SETTINGS.keys() | prices, wanted - APP_SETTINGS.keys() - prices
    assert "}, prices, extraAppSettings)" in MAIN
    assert "LIMITS_CLOCK_OFFSET_SECONDS" not in MAIN + API
