"""The managed-identity endpoint (real azure-identity code path), token expiry, and who may call what."""

import asyncio
import time

import pytest
import requests
from azure.identity import DefaultAzureCredential, ManagedIdentityCredential

from local.emulator import Emulator
from local.emulator.peer import ClientPeer
from local.testing.host_process import wait_until

SCOPE = "https://cognitiveservices.azure.com/.default"


@pytest.fixture
def identity_env(monkeypatch):
    def use(emu):
        monkeypatch.setenv("IDENTITY_ENDPOINT", emu.identity_endpoint)
        monkeypatch.setenv("IDENTITY_HEADER", emu.identity_header)
        for name in (
            "MSI_ENDPOINT",
            "MSI_SECRET",
            "AZURE_CLIENT_ID",
            "AZURE_TENANT_ID",
            "AZURE_CLIENT_SECRET",
            "AZURE_FEDERATED_TOKEN_FILE",
            "IMDS_ENDPOINT",
        ):
            monkeypatch.delenv(name, raising=False)

    return use


def mint(emu, headers, body=None):
    body = body if body is not None else {"session": {"type": "realtime", "model": emu.deployment}}
    return requests.post(f"{emu.url}/openai/v1/realtime/client_secrets", json=body, headers=headers, timeout=10)


def test_managed_identity_credential_gets_a_token_that_the_service_accepts(emulator, identity_env):
    identity_env(emulator)
    before = emulator.stats()["identity_tokens"]
    token = ManagedIdentityCredential().get_token(SCOPE)
    assert token.token.startswith("entra_")
    assert token.expires_on > time.time() + 3000
    assert emulator.stats()["identity_tokens"] == before + 1
    r = mint(emulator, {"Authorization": f"Bearer {token.token}"})
    assert r.status_code == 200 and r.json()["value"].startswith("ek_")
    # DefaultAzureCredential reaches the same endpoint through its chain.
    default = DefaultAzureCredential(
        exclude_interactive_browser_credential=True,
        exclude_cli_credential=True,
        exclude_powershell_credential=True,
        exclude_developer_cli_credential=True,
        exclude_visual_studio_code_credential=True,
    )
    assert default.get_token(SCOPE).token.startswith("entra_")


def test_wrong_identity_header_is_refused(emulator, identity_env):
    r = requests.get(
        emulator.identity_endpoint,
        headers={"X-IDENTITY-HEADER": "wrong"},
        params={"api-version": "2019-08-01", "resource": "r"},
        timeout=10,
    )
    assert r.status_code == 401
    r = requests.get(
        emulator.identity_endpoint,
        headers={"X-IDENTITY-HEADER": emulator.identity_header},
        params={"resource": "r"},
        timeout=10,
    )
    assert r.status_code == 400


def test_tokens_expire_and_the_credential_refreshes(identity_env):
    emu = Emulator(port=0, token_lifetime=2).start()
    try:
        identity_env(emu)
        credential = ManagedIdentityCredential()
        first = credential.get_token(SCOPE)
        assert first.expires_on <= time.time() + 3
        assert mint(emu, {"Authorization": f"Bearer {first.token}"}).status_code == 200
        # accepted until its 2 s are up, then refused: asked again until the emulator says no
        (expired,) = wait_until(  # a 1-tuple: a refused Response is falsy
            lambda: (r := mint(emu, {"Authorization": f"Bearer {first.token}"})).status_code != 200 and (r,),
            5,
            0.1,
            what="the token refused",
        )
        assert expired.status_code == 401 and "expired" in expired.json()["error"]["message"]
        assert first.token not in expired.text
        second = credential.get_token(SCOPE)
        assert second.token != first.token
        assert mint(emu, {"Authorization": f"Bearer {second.token}"}).status_code == 200
        assert emu.stats()["identity_tokens"] == 2
    finally:
        emu.stop()


def test_client_secrets_validates_like_the_service(emulator):
    token = requests.get(
        emulator.identity_endpoint,
        headers={"X-IDENTITY-HEADER": emulator.identity_header},
        params={"api-version": "2019-08-01", "resource": "r"},
        timeout=10,
    ).json()["access_token"]
    auth = {"Authorization": f"Bearer {token}"}
    model = emulator.deployment
    cases = {
        "ok": (
            {"expires_after": {"anchor": "created_at", "seconds": 10}, "session": {"type": "realtime", "model": model}},
            200,
        ),
        "too_short": (
            {"expires_after": {"anchor": "created_at", "seconds": 9}, "session": {"type": "realtime", "model": model}},
            400,
        ),
        "too_long": (
            {
                "expires_after": {"anchor": "created_at", "seconds": 7201},
                "session": {"type": "realtime", "model": model},
            },
            400,
        ),
        "bad_anchor": (
            {"expires_after": {"anchor": "now", "seconds": 60}, "session": {"type": "realtime", "model": model}},
            400,
        ),
        "wrong_type": ({"session": {"type": "transcription", "model": model}}, 400),
        "unknown_deployment": ({"session": {"type": "realtime", "model": "gpt-5"}}, 400),
        "not_object": ([1, 2], 400),
    }
    got = {name: mint(emulator, auth, body).status_code for name, (body, _) in cases.items()}
    assert got == {name: status for name, (_, status) in cases.items()}
    ok = mint(emulator, auth, cases["ok"][0]).json()
    assert 9 <= ok["expires_at"] - time.time() <= 11
    assert ok["session"]["audio"]["output"]["voice"]
    assert mint(emulator, {}).status_code == 401
    assert mint(emulator, {"Authorization": "Bearer entra_forged"}).status_code == 401
    assert mint(emulator, {"api-key": "anything"}).status_code == 401  # no key configured


def test_api_key_auth_when_configured():
    emu = Emulator(port=0, api_key="local-key").start()
    try:
        assert mint(emu, {"api-key": "local-key"}).status_code == 200
        assert mint(emu, {"api-key": "other"}).status_code == 401
    finally:
        emu.stop()


def test_calls_need_a_live_ephemeral_key_and_raw_sdp(emulator):
    token = requests.get(
        emulator.identity_endpoint,
        headers={"X-IDENTITY-HEADER": emulator.identity_header},
        params={"api-version": "2019-08-01", "resource": "r"},
        timeout=10,
    ).json()["access_token"]
    short = mint(
        emulator,
        {"Authorization": f"Bearer {token}"},
        {
            "expires_after": {"anchor": "created_at", "seconds": 10},
            "session": {"type": "realtime", "model": emulator.deployment},
        },
    ).json()["value"]
    url = f"{emulator.url}/openai/v1/realtime/calls?webrtcfilter=on"

    def post(auth, body="v=0\r\n", ctype="application/sdp"):
        return requests.post(
            url, data=body, headers={"Authorization": auth, "Content-Type": ctype}, timeout=10
        ).status_code

    assert post(f"Bearer {token}") == 401  # an Entra token is not an ephemeral key
    assert post("Bearer ek_forged") == 401
    assert post(f"Bearer {short}", ctype="text/plain") == 400
    assert post(f"Bearer {short}", body="not sdp") == 400

    async def two_sessions():
        # One secret starts several sessions until it expires.
        peers = [ClientPeer(), ClientPeer()]
        ids = [await p.connect(emulator.url, short) for p in peers]
        for p in peers:
            await p.close()
        return ids

    ids = asyncio.run(two_sessions())
    assert len(set(ids)) == 2 and all(i.startswith("rtc_") for i in ids)


def test_cors_preflight_on_calls(emulator):
    r = requests.options(
        f"{emulator.url}/openai/v1/realtime/calls?webrtcfilter=on",
        timeout=10,
        headers={
            "Origin": "http://127.0.0.1:9999",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type",
        },
    )
    assert r.status_code == 204
    assert r.headers["Access-Control-Allow-Origin"] == "http://127.0.0.1:9999"
    assert "POST" in r.headers["Access-Control-Allow-Methods"]
    assert "authorization" in r.headers["Access-Control-Allow-Headers"].lower()
