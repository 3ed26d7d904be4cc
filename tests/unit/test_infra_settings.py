"""The app settings the bicep gives the function app cover what the code needs in Azure.

The oracle is the code itself: `load_settings({})` names every setting without a safe default,
function_app.py names the `%SETTING%` its bindings resolve, and table_service/identity need the
identity-based storage group. The bicep app settings are read from the `KEY: value` lines of the
objects that feed `appSettingsKeyValuePairs` (main.bicep's gatewayAppSettings, api.bicep's identitySettings).
"""

from __future__ import annotations

import re

import pytest

from realtime_gateway.settings import QUEUE_NAME, TABLE_NAME, SettingsError, load_settings
from tests.fixtures.infra import API, APP_SETTINGS, MAIN, PARAMS, ROOT, decorator_value, deployed_env


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
            "AZURE_OPENAI_DEPLOYMENT": param_default("openAiModelName"),  # the deployment name defaults to it
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
    # every limits/price setting of local.settings.json.example reaches the app
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
    # extra settings win over the template's (but not over the phone calls' Key Vault references); identity settings stay last
    assert "}, authSecretSettings, extraAppSettings, sipSecretSettings)" in MAIN


def test_the_deployed_defaults_are_the_safe_ones_and_the_app_accepts_them():
    env = deployed_env()
    assert {"DAILY_SPEND_LIMIT_USD", "LIMIT_SLOT_SHARDS", "CONTROL_RATE_PER_MINUTE", "POLICY_ENFORCE"} <= env.keys()
    s = load_settings(env)
    assert s.token_route_enabled is False  # a public site: no secrets that bypass slots, listener and budgets
    assert s.limits.hangup_running is True  # a spent budget hangs up the running calls too
    assert s.limits.daily_spend_usd == 20.0
    assert s.limits.principal_daily_spend_usd == 0.0
    assert s.limits.running_minute_usd == 0.10
    assert s.limits.slot_shards == 16
    assert s.limits.control_rate_per_minute == 120
    assert s.limits.max_active_calls == 100
    assert (s.policy_enforce, s.policy_max_violations, s.health_cache_seconds) == (True, 3, 15.0)
    assert (s.audit_api_enabled, s.archive_retention_days, s.require_principal) == (False, 0, False)
    assert s.deployment == "gpt-realtime-1.5"
    assert s.allowed_origins == ("https://stapp-abc123.azurestaticapps.net",)  # the empty extra dropped


def test_new_settings_reach_the_app_settings_from_their_parameters():
    wanted = {
        "TOKEN_ROUTE_ENABLED": "string(tokenRouteEnabled)",
        "BUDGET_HANGUP_RUNNING": "string(budgetHangupRunning)",
        "DAILY_SPEND_LIMIT_USD": "dailySpendLimitUsd",
        "PRINCIPAL_DAILY_SPEND_LIMIT_USD": "principalDailySpendLimitUsd",
        "PRICE_RUNNING_CALL_PER_MINUTE": "priceRunningCallPerMinute",
        "LIMIT_SLOT_SHARDS": "string(slotShards)",
        "CONTROL_RATE_PER_MINUTE": "string(controlRatePerMinute)",
        "POLICY_ENFORCE": "string(policyEnforce)",
        "POLICY_MAX_VIOLATIONS": "string(policyMaxViolations)",
        "HEALTH_CACHE_SECONDS": "string(healthCacheSeconds)",
        "AUDIT_API_ENABLED": "string(auditApiEnabled)",
        "ARCHIVE_RETENTION_DAYS": "string(archiveRetentionDays)",
    }
    assert {k: APP_SETTINGS.get(k) for k in wanted} == wanted
    defaults = {k: PARAMS[k]["default"] for k in ("tokenRouteEnabled", "budgetHangupRunning", "dailySpendLimitUsd")}
    assert defaults == {"tokenRouteEnabled": False, "budgetHangupRunning": True, "dailySpendLimitUsd": "20"}


def test_a_set_value_reaches_the_app():
    env = deployed_env(
        tokenRouteEnabled=True, dailySpendLimitUsd="0", maxActiveCalls=10000, limitSlotShards=64, policyEnforce=False
    )
    s = load_settings(env)
    assert (s.token_route_enabled, s.limits.daily_spend_usd, s.limits.max_active_calls) == (True, 0.0, 10000)
    assert (s.limits.slot_shards, s.policy_enforce) == (64, False)


# app setting -> the int parameter it is made of (`string(param)`)
INT_SETTINGS = {
    name: m.group(1)
    for name, expr in APP_SETTINGS.items()
    if (m := re.fullmatch(r"string\((\w+)\)", expr)) and PARAMS.get(m.group(1), {}).get("type") == "int"
} | {"LIMIT_SLOT_SHARDS": "limitSlotShards"}  # through slotShards, raised for MAX_ACTIVE_CALLS


def test_slot_shards_follow_the_active_call_cap():
    from realtime_gateway.settings import SLOTS_PER_SHARD

    assert f"var slotsPerShard = {SLOTS_PER_SHARD}\n" in MAIN
    assert "var slotShards = max(limitSlotShards, (maxActiveCalls + slotsPerShard - 1) / slotsPerShard)" in MAIN
    for cap, shards, deployed in ((100, 16, 16), (6400, 16, 16), (6401, 16, 17), (10000, 16, 25), (10000, 64, 64)):
        env = deployed_env(maxActiveCalls=cap, limitSlotShards=shards)
        assert env["LIMIT_SLOT_SHARDS"] == str(deployed)
        assert load_settings(env).limits.slot_shards == deployed


def test_max_active_calls_may_go_up_to_ten_thousand():
    assert INT_SETTINGS["MAX_ACTIVE_CALLS"] == "maxActiveCalls"
    assert decorator_value(PARAMS["maxActiveCalls"]["decorators"], "maxValue") == 10000


@pytest.mark.parametrize("setting", sorted(set(INT_SETTINGS) - {"PYTHON_THREADPOOL_THREAD_COUNT"}))
def test_integer_ranges_are_the_apps(setting):
    """@minValue/@maxValue of the parameter are the range the app accepts, so `azd provision` refuses
    what the app would refuse at start. (PYTHON_THREADPOOL_THREAD_COUNT is the Python worker's.)"""
    decorators = PARAMS[INT_SETTINGS[setting]]["decorators"]
    lo, hi = decorator_value(decorators, "minValue"), decorator_value(decorators, "maxValue")
    assert lo is not None and hi is not None, f"{INT_SETTINGS[setting]} ({setting}) needs @minValue and @maxValue"
    for ok in (lo, hi):
        env = deployed_env(**{INT_SETTINGS[setting]: ok})  # derived settings follow, as in main.bicep
        assert env[setting] == str(ok) or setting == "LIMIT_SLOT_SHARDS"
        load_settings(env)
    base = deployed_env()
    for bad in (lo - 1, hi + 1):
        with pytest.raises(SettingsError, match=setting):
            load_settings({**base, setting: str(bad)})


def test_the_worker_and_the_local_host_run_with_two_allocator_arenas():
    """glibc reads MALLOC_ARENA_MAX when the process starts: an app setting (an environment variable of
    the worker) in Azure, a Values entry (the local host's environment) under `make run`."""
    import json

    example = json.loads((ROOT / "local.settings.json.example").read_text(encoding="utf-8"))["Values"]
    assert APP_SETTINGS["MALLOC_ARENA_MAX"] == "'2'"
    assert example["MALLOC_ARENA_MAX"] == "2"
