"""The gateway's handlers in process against the emulator: /connect with raw SDP and the seed's
multipart form, the listener message, every error status, and no secret in any log or error."""

import base64
import dataclasses
import json
import logging

import pytest
from urllib3 import encode_multipart_formdata

from local.testing.offer import OfferPeer
from realtime_gateway import redact
from realtime_gateway import services as services_state
from realtime_gateway.core.message import CallMessage
from realtime_gateway.gateway import routes
from realtime_gateway.gateway.http import Request, handle
from realtime_gateway.services import Services
from realtime_gateway.settings import load_settings, storage_connection
from realtime_gateway.upstream.identity import BearerTokenProvider

ORIGIN = "https://app.example.com"


class Secrets:
    """Every secret the emulator issued to this gateway, seen on the wire by a response hook."""

    def __init__(self):
        self.values: set[str] = set()

    def hook(self, response, *args, **kwargs):
        if response.url.endswith("/client_secrets") and response.status_code == 200:
            try:
                self.values.add(response.json()["value"])
            except ValueError:
                pass


@pytest.fixture
def gw(emulator, monkeypatch):
    monkeypatch.setenv("IDENTITY_ENDPOINT", emulator.identity_endpoint)
    monkeypatch.setenv("IDENTITY_HEADER", emulator.identity_header)
    monkeypatch.delenv("AZURE_CLIENT_ID", raising=False)
    settings = load_settings(
        {
            "AZURE_OPENAI_ENDPOINT": emulator.url,
            "AZURE_OPENAI_DEPLOYMENT": "gpt-realtime",
            "ALLOWED_ORIGINS": ORIGIN,
            "RATE_LIMIT_PER_MINUTE": "0",  # no storage here (env={}): limits are tested on the host
            "MAX_ACTIVE_CALLS": "0",
            "DAILY_SPEND_LIMIT_USD": "0",
            "CONTROL_RATE_PER_MINUTE": "0",
            "HTTP_TIMEOUT_SECONDS": "2",
            "MAX_CALL_SECONDS": "600",
            "TOKEN_ROUTE_ENABLED": "true",
            "HEALTH_CACHE_SECONDS": "0",  # each request asks anew: the test changes the storage between them
            "WEBSITE_AUTH_ENABLED": "true",  # as App Service authentication sets it: the principal header is the platform's
            "SECRET_POOL_SIZE": "0",  # each fault here hits the inline mint; tests/integration/test_secret_pool.py covers the pool
        }
    )
    gateway = Services(settings)
    gateway.secrets = Secrets()
    gateway.api.session.hooks["response"].append(gateway.secrets.hook)
    services_state.reset_services(gateway)
    yield gateway
    services_state.reset_services()


def fresh_identity(gw):
    """As in a new worker process: no cached token anywhere to fall back on."""
    gw.tokens = gw.api.tokens = BearerTokenProvider(gw.settings)


@pytest.fixture(scope="module")
def offer():
    with OfferPeer() as peer:
        yield peer.offer


def connect(body, ctype="application/sdp", headers=None, enqueue=None):
    queued = []
    resp = handle(
        routes.connect,
        services_state.get_services,
        Request("POST", "http://h/api/connect", {"Content-Type": ctype, "Origin": ORIGIN, **(headers or {})}, body),
        enqueue=enqueue or queued.append,
    )
    return resp, queued


def test_raw_sdp_connect_gives_a_working_call_and_a_listener_message(gw):
    principal = base64.b64encode(
        json.dumps({"identityProvider": "aad", "userId": "u-1", "userDetails": "ada"}).encode()
    ).decode()
    with OfferPeer() as peer:
        resp, queued = connect(peer.offer.encode(), headers={"x-ms-client-principal": principal})
        assert resp.status == 201 and resp.mimetype == "application/sdp"
        peer.accept(resp.body.decode(), wait_open=15)
    call_id = resp.headers["x-call-id"]
    assert call_id.startswith("rtc_") and resp.headers["x-listener"] == "queued"
    assert resp.headers["Access-Control-Allow-Origin"] == ORIGIN
    message = CallMessage.from_json(queued[0])
    assert message.call_id == call_id and message.origin == ORIGIN
    assert message.principal["id"] == "u-1" and message.model == "gpt-realtime"
    assert message.deadline == pytest.approx(message.started_at + 600)
    assert message.request_id == resp.headers["x-request-id"]


def test_seed_multipart_form_connects(gw, offer):
    body, ctype = encode_multipart_formdata({"sdp": offer})
    resp, queued = connect(body, ctype)
    assert resp.status == 201 and resp.body.startswith(b"v=0") and len(queued) == 1


def test_enqueue_failure_is_reported_but_the_call_succeeds(gw, offer, caplog):
    def broken(_):
        raise OSError("queue unreachable")

    resp, _ = connect(offer.encode(), enqueue=broken)
    assert resp.status == 201 and resp.headers["x-listener"] == "not-queued"
    assert "not queued" in caplog.text


def test_token_route_returns_only_what_a_client_needs(gw):
    resp = handle(routes.token, services_state.get_services, Request("GET", "http://h/api/token", {"Origin": ORIGIN}))
    data = json.loads(resp.body)
    assert resp.status == 200 and set(data) == {"token", "expires_at", "endpoint", "deployment"}
    assert data["token"].startswith("ek_") and resp.headers["Cache-Control"] == "no-store"


def test_health_reports_identity_and_storage(gw, azurite):
    gw.settings = dataclasses.replace(
        gw.settings, storage=storage_connection({"AzureWebJobsStorage": azurite.connection_string})
    )
    resp = handle(routes.health, services_state.get_services, Request("GET", "http://h/api/health"))
    assert resp.status == 200, resp.body
    assert json.loads(resp.body)["checks"] == {"settings": "ok", "identity": "ok", "storage": "ok"}
    dead = "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=abc;TableEndpoint=http://127.0.0.1:9/devstoreaccount1;"
    gw.settings = dataclasses.replace(gw.settings, storage=storage_connection({"AzureWebJobsStorage": dead}))
    resp = handle(routes.health, services_state.get_services, Request("GET", "http://h/api/health"))
    assert resp.status == 503 and "storage not reachable" in json.loads(resp.body)["checks"]["storage"]


# status, fault target, fault spec, expected code; each through the whole /connect handler
FAULTS = [
    (429, "client_secrets", {"status": 429, "retry_after": 90, "times": 0}, "upstream_throttled"),
    (429, "calls", {"status": 429, "retry_after": 5}, "upstream_throttled"),
    (502, "calls", {"no_location": True}, "upstream_bad_response"),
    (502, "calls", {"status": 201, "body": "not sdp", "content_type": "text/plain"}, "upstream_bad_response"),
    (502, "client_secrets", {"status": 500, "times": 0}, "upstream_error"),
    (504, "calls", {"delay": 3.0}, "upstream_timeout"),
    (503, "identity", {"status": 500, "times": 0}, "identity_unavailable"),
]


@pytest.mark.parametrize("status,target,spec,code", FAULTS)
def test_upstream_faults_map_to_statuses(gw, emulator, offer, status, target, spec, code):
    if target == "identity":
        fresh_identity(gw)
    emulator.set_fault(target, **spec)
    resp, queued = connect(offer.encode())
    err = json.loads(resp.body)["error"]
    assert (resp.status, err["code"]) == (status, code)
    assert err["request_id"] == resp.headers["x-request-id"] and not queued
    if status == 429:
        assert resp.headers["Retry-After"] == str(spec["retry_after"])
        assert "retry-after" in resp.headers["Access-Control-Expose-Headers"]


def test_no_secret_in_any_log_or_error(gw, emulator, offer, caplog):
    """All log output at DEBUG (ours, requests/urllib3, azure-identity) over the happy path and
    every error path, then: no Entra token or ephemeral key the emulator issued appears."""
    caplog.set_level(logging.DEBUG)
    bodies = []
    for _ in range(2):
        resp, _ = connect(offer.encode())
        assert resp.status == 201
    first_entra = gw.tokens.token()
    body, ctype = encode_multipart_formdata({"sdp": offer})
    bodies.append(connect(body, ctype)[0].body)
    token_resp = handle(
        routes.token,
        services_state.get_services,
        Request("GET", "http://h/api/token", {"Origin": ORIGIN}),
    )
    handed_out = json.loads(token_resp.body)["token"]  # the route's purpose; must still not be logged
    for _, target, spec, _ in FAULTS:
        if target == "identity":
            fresh_identity(gw)
        emulator.set_fault(target, **spec)
        bodies.append(connect(offer.encode())[0].body)
        emulator.clear_faults()
    for ctype, payload in (
        ("text/plain", b"x"),
        ("application/sdp", b""),
        ("application/sdp", b"v=0\n"),
        ("application/sdp", b"v=0\r\n" + b"a" * 70000),
    ):
        bodies.append(connect(payload, ctype)[0].body)
    bodies.append(
        handle(
            routes.hangup,
            services_state.get_services,
            Request("POST", "http://h/api/calls/rtc_nope/hangup"),
            call_id="rtc_nope",
        ).body
    )
    bodies.append(
        handle(
            routes.connect,
            services_state.get_services,
            Request("POST", "http://h/api/connect", {"Origin": "https://evil.io"}),
        ).body
    )

    entra = {first_entra, gw.tokens.token()}
    secrets = gw.secrets.values | entra | {handed_out}
    assert len(gw.secrets.values) >= 4 and all(e.startswith("entra_") for e in entra)
    logs = caplog.text + "\n".join(r.getMessage() for r in caplog.records)
    assert "POST connect -> 201" in logs and "-> 429" in logs and "-> 503" in logs
    assert len(caplog.records) > 30
    for secret in secrets:
        assert secret not in logs
        assert all(secret.encode() not in b for b in bodies)


def test_api_key_resources_work_and_the_key_is_never_logged(caplog, offer, azurite):
    from local.emulator import Emulator

    redact.install_record_factory()  # as function_app.py does at start-up (this test may run alone)
    key = "emulator-api-key-0123456789"
    emu = Emulator(port=0, api_key=key).start()
    try:
        caplog.set_level(logging.DEBUG)
        settings = load_settings(
            {
                "AZURE_OPENAI_ENDPOINT": emu.url,
                "AZURE_OPENAI_DEPLOYMENT": "gpt-realtime",
                "AZURE_OPENAI_API_KEY": key,
                "ALLOWED_ORIGINS": ORIGIN,
                "RATE_LIMIT_PER_MINUTE": "0",  # no storage here (env={}): limits are tested on the host
                "MAX_ACTIVE_CALLS": "0",
                "DAILY_SPEND_LIMIT_USD": "0",
                "CONTROL_RATE_PER_MINUTE": "0",
                "AzureWebJobsStorage": azurite.connection_string,
            }
        )
        gateway = Services(settings)
        assert gateway.tokens is None
        services_state.reset_services(gateway)
        resp, queued = connect(offer.encode())
        assert resp.status == 201 and len(queued) == 1
        call_id = resp.headers["x-call-id"]
        capability = {"x-call-capability": resp.headers["x-call-capability"]}
        assert (
            handle(
                routes.hangup,
                services_state.get_services,
                Request("POST", "http://h/", capability),
                call_id=call_id,
            ).status
            == 200
        )
        logging.getLogger("anything").warning("upstream said: api-key %s rejected", key)
        assert emu.stats()["identity_tokens"] == 0
        assert key not in caplog.text
    finally:
        services_state.reset_services()
        emu.stop()
