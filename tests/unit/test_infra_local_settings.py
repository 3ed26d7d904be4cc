"""The postprovision hook's logic (infra/hooks/local_settings.py), in process: what it writes for a
local run against Azure is settings the app itself accepts, and what it writes for the auditor points
the audit command at the deployed archive. The hook run as azd runs it (a fake azd on PATH) is in
tests/integration/test_infra_local_settings_hook.py; that azure.yaml registers it, below."""

from __future__ import annotations

import importlib.util
import json
import shlex
import sys
from pathlib import Path

import yaml

from realtime_gateway.settings import archive_tables, limits_settings, load_settings, storage_connection

ROOT = Path(__file__).resolve().parents[2]
HOOK_PATH = ROOT / "infra" / "hooks" / "local_settings.py"


def _load_hook():
    spec = importlib.util.spec_from_file_location("local_settings_hook", HOOK_PATH)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


hook = _load_hook()
CARRIED = hook.app_setting_names(
    (ROOT / "realtime_gateway" / "settings.py").read_text(encoding="utf-8"),
    json.loads((ROOT / "infra" / "main.parameters.json").read_text(encoding="utf-8")),
)
# what `azd env get-values` holds after a provision: outputs, azd's own values, and what the user set
VALUES = {
    "AZURE_ENV_NAME": "dev",
    "AZURE_LOCATION": "eastus2",
    "AZURE_SUBSCRIPTION_ID": "00000000-0000-0000-0000-000000000000",
    "AZURE_OPENAI_ENDPOINT": "https://cog-abc123.openai.azure.com",
    "AZURE_OPENAI_DEPLOYMENT": "gpt-realtime-1.5",
    "AZURE_OPENAI_MODEL": "gpt-realtime-1.5",
    "AZURE_STORAGE_TABLE_ENDPOINT": "https://stabc123.table.core.windows.net",
    "SERVICE_WEB_URI": "https://stapp-abc123.azurestaticapps.net",
    "SERVICE_API_URI": "https://func-api-abc123.azurewebsites.net",
    "ALLOWED_ORIGINS": "https://stapp-abc123.azurestaticapps.net",
    "DAILY_SPEND_LIMIT_USD": "50",
    "ARCHIVE_SESSIONS_TABLE": "auditsessions",
    "PRICE_OUTPUT_AUDIO_PER_MTOK": "80",
    "SIGN_IN_ENABLED": "true",
    "REQUIRE_PRINCIPAL": "true",
    "AUTH_CLIENT_ID": "11111111-1111-1111-1111-111111111111",
}


def test_azure_yaml_runs_the_hook_after_provision():
    doc = yaml.safe_load((ROOT / "azure.yaml").read_text(encoding="utf-8"))
    for platform in ("posix", "windows"):
        run = doc["hooks"]["postprovision"][platform]["run"]
        assert (ROOT / run.split()[1]).resolve() == HOOK_PATH  # project hooks run in the project folder


def test_carried_settings_are_app_settings_the_user_can_set():
    assert {
        "DAILY_SPEND_LIMIT_USD",
        "LISTENER_QUEUE",
        "ARCHIVE_SESSIONS_TABLE",
        "PRICE_OUTPUT_AUDIO_PER_MTOK",
    } <= CARRIED
    # azd-only inputs, outputs and the sign-in settings that only mean something in Azure stay behind
    assert not CARRIED & {
        "SIGN_IN_ENABLED",
        "AUTH_CLIENT_ID",
        "AZURE_OPENAI_MODEL",
        "REQUIRE_PRINCIPAL",
        "AZURE_LOCATION",
    }


def test_local_settings_are_settings_the_app_accepts():
    doc = hook.local_settings(VALUES, CARRIED)
    values = doc["Values"]
    settings = load_settings(values)  # raises if the file would stop the app
    assert settings.endpoint == VALUES["AZURE_OPENAI_ENDPOINT"]
    assert settings.deployment == VALUES["AZURE_OPENAI_DEPLOYMENT"]
    assert settings.limits.daily_spend_usd == 50
    assert settings.sessions_table == "auditsessions"
    assert settings.storage is not None and "devstoreaccount1" in (settings.storage.connection_string or "")
    assert set(settings.allowed_origins) == set(hook.LOCAL_ORIGINS) and doc["Host"]["CORS"] == ""  # as deployed
    assert "REQUIRE_PRINCIPAL" not in values and "SIGN_IN_ENABLED" not in values
    assert not any(key.startswith(("IDENTITY_", "AzureWebJobsStorage__")) for key in values)  # your own sign-in


def shell_assignments(text: str) -> dict[str, str]:
    env = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.partition("=")
            env[name] = "".join(shlex.split(value)) if value else ""
    return env


def test_audit_env_points_the_audit_command_at_the_archive():
    text = hook.audit_env(VALUES, CARRIED, "dev")
    env = shell_assignments(text)
    storage = storage_connection(env)
    assert storage.connection_string is None  # an exported Azurite string is cleared, not used
    assert storage.table_uri == VALUES["AZURE_STORAGE_TABLE_ENDPOINT"]
    assert archive_tables(env) == ("callevents", "auditsessions")
    assert limits_settings(env).prices["output_audio"] == 80
    assert "DAILY_SPEND_LIMIT_USD" not in env  # the audit command does not read it


def test_audit_env_quotes_what_a_shell_would_split():
    text = hook.audit_env({**VALUES, "LIMITS_TABLE": "it's odd"}, CARRIED | {"LIMITS_TABLE"}, "dev")
    assert shell_assignments(text)["LIMITS_TABLE"] == "it's odd"


def test_parse_values_reads_json_and_dotenv():
    assert hook.parse_values('{"A_B": "x", "N": null, "I": 3}') == {"A_B": "x", "N": "", "I": "3"}
    dotenv = 'AZURE_ENV_NAME="dev"\nQUOTED="say \\"hi\\""\nPLAIN=value\n# comment\nSINGLE=\'a b\'\n'
    assert hook.parse_values(dotenv) == {
        "AZURE_ENV_NAME": "dev",
        "QUOTED": 'say "hi"',
        "PLAIN": "value",
        "SINGLE": "a b",
    }
