"""Settings: read once, every problem named at once, sensible defaults."""

import json

import pytest

from realtime_gateway.archive.tables import StorageConfigError, table_service_from_env
from realtime_gateway.settings import SettingsError, load_settings

BASE = {"AZURE_OPENAI_ENDPOINT": "https://res.openai.azure.com/", "AZURE_OPENAI_DEPLOYMENT": "gpt-realtime"}


def test_defaults_and_session_policy():
    s = load_settings(BASE)
    assert s.endpoint == "https://res.openai.azure.com" and s.websocket_endpoint == "wss://res.openai.azure.com"
    assert s.session_policy == {
        "type": "realtime",
        "model": "gpt-realtime",
        "instructions": "You are a helpful assistant.",
        "audio": {"output": {"voice": "marin"}},
    }
    assert (s.client_secret_ttl, s.listener_queue, s.webrtc_filter, s.sideband_session_update) == (
        600,
        "call-listener",
        True,
        None,
    )


def test_resource_name_policy_file_and_overrides(tmp_path):
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps({"session": {"instructions": "from file", "audio": {"output": {"voice": "cedar"}}}}))
    s = load_settings(
        {
            "AZURE_OPENAI_RESOURCE": "res",
            "AZURE_OPENAI_DEPLOYMENT": "d",
            "REALTIME_SESSION_POLICY_FILE": str(policy),
            "REALTIME_TOOLS": "[]",
            "REALTIME_TURN_DETECTION": '{"type": "server_vad"}',
            "LISTENER_SESSION_UPDATE": '{"instructions": "kept on the server"}',
        }
    )
    assert s.endpoint == "https://res.openai.azure.com"
    assert s.session_policy["instructions"] == "from file" and s.session_policy["tools"] == []
    assert s.session_policy["audio"] == {
        "output": {"voice": "cedar"},
        "input": {"turn_detection": {"type": "server_vad"}},
    }
    assert s.sideband_session_update == {"instructions": "kept on the server"}


def test_every_problem_is_named_at_once():
    with pytest.raises(SettingsError) as err:
        load_settings(
            {
                "CLIENT_SECRET_TTL_SECONDS": "5",
                "WEBRTC_FILTER": "maybe",
                "LISTENER_QUEUE": "Bad_Queue",
                "ALLOWED_ORIGINS": "example.com",
                "LISTENER_SESSION_UPDATE": "[1]",
                "REALTIME_TOOLS": "{",
            }
        )
    message = str(err.value)
    for name in (
        "AZURE_OPENAI_ENDPOINT",
        "AZURE_OPENAI_DEPLOYMENT",
        "CLIENT_SECRET_TTL_SECONDS",
        "WEBRTC_FILTER",
        "LISTENER_QUEUE",
        "ALLOWED_ORIGINS",
        "LISTENER_SESSION_UPDATE",
        "REALTIME_TOOLS",
    ):
        assert name in message


def test_origin_allowlist():
    s = load_settings({**BASE, "ALLOWED_ORIGINS": "https://a.example, http://127.0.0.1:5500/"})
    assert s.origin_allowed("https://a.example") and s.origin_allowed("http://127.0.0.1:5500")
    assert not s.origin_allowed("https://b.example") and s.origin_allowed(None)
    assert load_settings({**BASE, "ALLOWED_ORIGINS": "*"}).origin_allowed("https://any.example")


def test_pool_settings_are_validated():
    base = {"AZURE_OPENAI_ENDPOINT": "https://r.openai.azure.com", "AZURE_OPENAI_DEPLOYMENT": "d"}
    s = load_settings(base)
    assert (s.secret_pool_size, s.secret_pool_ttl, s.secret_pool_lead) == (8, 600, 120)
    with pytest.raises(SettingsError, match="SECRET_POOL_LEAD_SECONDS must be at most half"):
        load_settings({**base, "SECRET_POOL_TTL_SECONDS": "100", "SECRET_POOL_LEAD_SECONDS": "60"})
    with pytest.raises(SettingsError, match="SECRET_POOL_SIZE must be between 0 and 64"):
        load_settings({**base, "SECRET_POOL_SIZE": "65"})


def test_storage_config_needs_a_connection(monkeypatch):
    with pytest.raises(StorageConfigError):
        table_service_from_env({})
    svc = table_service_from_env({"AzureWebJobsStorage__tableServiceUri": "https://acct.table.core.windows.net"})
    assert svc.url.startswith("https://acct.table.core.windows.net")


def test_use_development_storage_means_azurite_on_its_own_ports_as_core_tools_reads_it():
    from realtime_gateway.settings import DEVELOPMENT_STORAGE, storage_connection

    storage = storage_connection({"AzureWebJobsStorage": "UseDevelopmentStorage=true"})
    assert storage.connection_string == DEVELOPMENT_STORAGE
    assert "TableEndpoint=http://127.0.0.1:10002/devstoreaccount1" in DEVELOPMENT_STORAGE
    s = load_settings({**BASE, "AzureWebJobsStorage": "UseDevelopmentStorage=true"})
    assert s.storage == storage
