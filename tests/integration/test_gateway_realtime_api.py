"""RealtimeApi against the emulator: minting (shape checked with the openai types), the SDP post,
hang-up, and every upstream fault mapped to its status, with retries only where safe."""

import time

import pytest
from openai.types.realtime import ClientSecretCreateResponse

from local.testing.offer import OfferPeer
from realtime_gateway.errors import ApiError
from realtime_gateway.settings import load_settings
from realtime_gateway.upstream.identity import BearerTokenProvider
from realtime_gateway.upstream.realtime_api import MINT_ATTEMPTS, ClientSecret, RealtimeApi


@pytest.fixture
def api(emulator, monkeypatch):
    monkeypatch.setenv("IDENTITY_ENDPOINT", emulator.identity_endpoint)
    monkeypatch.setenv("IDENTITY_HEADER", emulator.identity_header)
    monkeypatch.delenv("AZURE_CLIENT_ID", raising=False)
    settings = load_settings(
        {
            "AZURE_OPENAI_ENDPOINT": emulator.url,
            "AZURE_OPENAI_DEPLOYMENT": "gpt-realtime",
            "HTTP_TIMEOUT_SECONDS": "2",
            "REALTIME_INSTRUCTIONS": "Be brief.",
        }
    )
    return RealtimeApi(settings, BearerTokenProvider(settings))


@pytest.fixture(scope="module")
def offer():
    with OfferPeer() as peer:
        yield peer.offer


def stat(emulator, name):
    return emulator.stats()[name]


def deadline(seconds=10.0):
    return time.monotonic() + seconds


def raises(fn, *args):
    with pytest.raises(ApiError) as info:
        fn(*args)
    return info.value


def test_mint_sends_the_session_policy(api, emulator):
    captured = []
    api.session.hooks["response"].append(lambda r, *a, **k: captured.append(r.json()))
    secret = api.mint_client_secret(deadline())
    assert secret.value.startswith("ek_") and secret.expires_at > time.time()
    parsed = ClientSecretCreateResponse.model_validate(captured[0])
    assert parsed.session.model == "gpt-realtime" and parsed.session.instructions == "Be brief."
    assert "ek_" not in repr(secret)


def test_offer_gets_the_emulators_answer_and_call_id(api, emulator):
    with OfferPeer() as peer:
        answer = api.post_offer(api.mint_client_secret(deadline()), peer.offer, deadline())
        assert answer.sdp.startswith("v=0") and answer.call_id.startswith("rtc_")
        peer.accept(answer.sdp, wait_open=15)  # the answer really is a working peer's
        api.hangup(answer.call_id)
    assert raises(api.hangup, answer.call_id).status == 404


def test_mint_retries_a_429_honouring_retry_after(api, emulator):
    before, faults = stat(emulator, "client_secrets"), stat(emulator, "faults_applied")
    emulator.set_fault("client_secrets", status=429, retry_after=1, times=1)
    started = time.monotonic()
    api.mint_client_secret(deadline(10))
    assert time.monotonic() - started >= 0.95
    assert stat(emulator, "faults_applied") - faults == 1
    assert stat(emulator, "client_secrets") - before == 1


def test_mint_retries_5xx_then_gives_502(api, emulator):
    emulator.set_fault("client_secrets", status=503, times=1)
    api.mint_client_secret(deadline(10))  # one 503, then success
    emulator.set_fault("client_secrets", status=500, times=0)
    faults = stat(emulator, "faults_applied")
    err = raises(api.mint_client_secret, deadline(10))
    assert (err.status, err.code) == (502, "upstream_error")
    assert stat(emulator, "faults_applied") - faults == MINT_ATTEMPTS  # bounded


def test_throttling_longer_than_the_deadline_is_passed_through(api, emulator):
    emulator.set_fault("client_secrets", status=429, retry_after=120, times=0)
    started = time.monotonic()
    err = raises(api.mint_client_secret, deadline(10))
    assert err.status == 429 and err.headers["Retry-After"] == "120"
    assert time.monotonic() - started < 2  # did not sleep past the request's deadline


def test_sdp_post_is_never_retried(api, emulator, offer):
    secret = api.mint_client_secret(deadline())
    for status, expected in ((500, 502), (503, 502), (429, 429)):
        faults = stat(emulator, "faults_applied")
        emulator.set_fault("calls", status=status, retry_after=3, times=0)  # every try would fail
        err = raises(api.post_offer, secret, offer, deadline())
        assert err.status == expected
        assert stat(emulator, "faults_applied") - faults == 1  # exactly one SDP post
    assert err.headers["Retry-After"] == "3"


def test_unusable_answers_are_502(api, emulator, offer):
    secret = api.mint_client_secret(deadline())
    emulator.set_fault("calls", no_location=True)
    assert raises(api.post_offer, secret, offer, deadline()).code == "upstream_bad_response"
    emulator.set_fault("calls", status=201, body="<html>oops</html>", content_type="text/html")
    assert raises(api.post_offer, secret, offer, deadline()).code == "upstream_bad_response"
    emulator.set_fault("client_secrets", status=200, body="{not json", content_type="application/json")
    assert raises(api.mint_client_secret, deadline()).code == "upstream_bad_response"


def test_upstream_timeout_is_504(api, emulator, offer):
    secret = api.mint_client_secret(deadline())
    emulator.set_fault("calls", delay=3.0)  # longer than HTTP_TIMEOUT_SECONDS=2
    err = raises(api.post_offer, secret, offer, deadline())
    assert (err.status, err.code) == (504, "upstream_timeout")


def test_expired_or_unknown_key_is_a_502_auth_error(api, offer):
    err = raises(api.post_offer, ClientSecret("ek_" + "0" * 48, 0), offer, deadline())
    assert (err.status, err.code) == (502, "upstream_auth")
