"""The managed-identity token cache against the emulator's identity endpoint (App Service
protocol), through azure-identity's real ManagedIdentityCredential / DefaultAzureCredential."""

import threading
import time

import pytest

from local.emulator import Emulator
from local.testing.host_process import wait_until
from realtime_gateway.errors import ApiError
from realtime_gateway.settings import load_settings
from realtime_gateway.upstream.identity import BearerTokenProvider, auth_headers, make_credential


def settings_for(emu, **extra):
    return load_settings({"AZURE_OPENAI_ENDPOINT": emu.url, "AZURE_OPENAI_DEPLOYMENT": "gpt-realtime", **extra})


@pytest.fixture
def identity_env(monkeypatch):
    def point_at(emu):
        monkeypatch.setenv("IDENTITY_ENDPOINT", emu.identity_endpoint)
        monkeypatch.setenv("IDENTITY_HEADER", emu.identity_header)
        for name in (
            "AZURE_CLIENT_ID",
            "AZURE_TENANT_ID",
            "AZURE_CLIENT_SECRET",
            "MSI_ENDPOINT",
            "AZURE_FEDERATED_TOKEN_FILE",
            "IDENTITY_SERVER_THUMBPRINT",
        ):
            monkeypatch.delenv(name, raising=False)

    return point_at


@pytest.fixture
def short_lived_emulator():
    # 200 s tokens: inside azure-identity's own 5-minute refresh window, so only our cache
    # keeps the endpoint from being asked on every call.
    emu = Emulator(port=0, token_lifetime=200)
    emu.start()
    yield emu
    emu.stop()


def hits(emu):
    return emu.stats()["identity_tokens"]


def test_one_identity_request_for_many_concurrent_calls(short_lived_emulator, identity_env):
    emu = short_lived_emulator
    identity_env(emu)
    provider = BearerTokenProvider(settings_for(emu))
    before = hits(emu)
    seen, errors = set(), []

    def worker():
        try:
            for _ in range(20):
                seen.add(provider.token())
        except Exception as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors
    assert len(seen) == 1 and next(iter(seen)).startswith("entra_")
    assert hits(emu) - before == 1


def test_refreshed_ahead_of_expiry(identity_env):
    emu = Emulator(port=0, token_lifetime=3)
    emu.start()
    try:
        identity_env(emu)
        provider = BearerTokenProvider(settings_for(emu))
        first = provider.token()
        issued = time.monotonic()
        assert provider.token() == first
        # a new token once past half-life (the margin for short tokens): asked for again and again
        # meanwhile, the cache answers every time, and the refresh comes before the 3 s expiry
        second = wait_until(lambda: (token := provider.token()) != first and token, 2.9, 0.05, what="a refresh")
        assert second.startswith("entra_") and time.monotonic() - issued >= 1.0 and hits(emu) == 2
    finally:
        emu.stop()


def test_user_assigned_identity_uses_managed_identity_credential(emulator, identity_env):
    from azure.identity import DefaultAzureCredential, ManagedIdentityCredential

    identity_env(emulator)
    s = settings_for(emulator, AZURE_CLIENT_ID="11111111-2222-3333-4444-555555555555")
    assert isinstance(make_credential(s), ManagedIdentityCredential)
    assert isinstance(make_credential(settings_for(emulator)), DefaultAzureCredential)
    assert BearerTokenProvider(s).token().startswith("entra_")


def test_identity_failure_is_503_without_detail(emulator, identity_env):
    identity_env(emulator)
    emulator.set_fault("identity", status=500, times=0)
    with pytest.raises(ApiError) as info:
        BearerTokenProvider(settings_for(emulator)).token()
    assert info.value.status == 503 and info.value.code == "identity_unavailable"


def test_auth_headers_prefer_the_api_key_when_configured(emulator):
    s = settings_for(emulator, AZURE_OPENAI_API_KEY="k-123")
    assert auth_headers(s, None) == {"api-key": "k-123"}


def test_recovers_after_a_transient_identity_failure(emulator, identity_env):
    identity_env(emulator)
    provider = BearerTokenProvider(settings_for(emulator))
    emulator.set_fault("identity", status=500, times=0)
    with pytest.raises(ApiError):
        provider.token()
    emulator.clear_faults()
    assert provider.token().startswith("entra_")  # same provider: no restart needed
