"""The gateway through the local functions host (subprocess) against the emulator and Azurite:
raw-SDP and seed multipart calls that really connect, the listener message on the queue, every
error status from the emulator's faults, CORS, and no secret in the host's logs."""

from __future__ import annotations

import base64
import json
import time

import pytest
import requests
from azure.storage.queue import QueueClient
from urllib3 import encode_multipart_formdata

from local.testing.host_process import ROOT
from local.testing.offer import OfferPeer
from realtime_gateway.core.message import CallMessage

PAGE_ORIGIN = "http://127.0.0.1:5500"  # a static site on another origin
# The listener is switched off the way Azure does it, so its message stays on the queue to read.
LISTENER_OFF = {"AzureWebJobs.call_listener.Disabled": "true"}


@pytest.fixture
def stack(host_factory, emulator, azurite, request):
    import secrets as _s

    from local.processes import free_port

    port = free_port()
    queue = f"gw-{_s.token_hex(4)}"
    settings = {
        "AzureWebJobsStorage": azurite.connection_string,
        "IDENTITY_ENDPOINT": emulator.identity_endpoint,
        "IDENTITY_HEADER": emulator.identity_header,
        "AZURE_OPENAI_ENDPOINT": emulator.url,
        "AZURE_OPENAI_DEPLOYMENT": "gpt-realtime",
        "ALLOWED_ORIGINS": f"http://127.0.0.1:{port},{PAGE_ORIGIN}",
        "LISTENER_QUEUE": queue,
        # these tests make many requests from 127.0.0.1: limits are tested in test_limits_host
        "LIMITS_TABLE": f"limits{_s.token_hex(4)}",
        "RATE_LIMIT_PER_MINUTE": "0",
        "TOKEN_ROUTE_ENABLED": "true",
        "WEBSITE_AUTH_ENABLED": "true",  # as App Service authentication sets it: the principal is the platform's
        "HTTP_TIMEOUT_SECONDS": "2",
        "MAX_CALL_SECONDS": "900",
        "SECRET_POOL_SIZE": "0",  # the mint's faults reach /connect only inline (the pool: test_secret_pool.py)
        **LISTENER_OFF,
    }
    settings.update(getattr(request, "param", {}))
    host = host_factory(ROOT, settings, port=port)
    host.queue = QueueClient.from_connection_string(azurite.connection_string, queue)
    host.emulator = emulator
    return host


@pytest.fixture(scope="module")
def offer():
    with OfferPeer() as peer:
        yield peer.offer


def post_connect(stack, body, ctype="application/sdp", origin=PAGE_ORIGIN, **headers):
    hdrs = {"Content-Type": ctype, **headers}
    if origin:
        hdrs["Origin"] = origin
    return requests.post(stack.url + "/api/connect", data=body, headers=hdrs, timeout=30)


def queued_messages(stack, wait=5.0) -> list[CallMessage]:
    end = time.monotonic() + wait
    while time.monotonic() < end:
        msgs = stack.queue.receive_messages(messages_per_page=32, visibility_timeout=30)
        found = [CallMessage.from_json(base64.b64decode(m.content)) for m in msgs]
        if found:
            return found
        time.sleep(0.1)
    return []


def error(resp):
    assert resp.headers["Content-Type"].startswith("application/json")
    body = resp.json()["error"]
    assert body["request_id"] == resp.headers["x-request-id"]
    return body


def test_raw_sdp_call_connects_and_the_listener_message_is_queued(stack):
    principal = base64.b64encode(
        json.dumps({"identityProvider": "aad", "userId": "u-9", "userDetails": "grace"}).encode()
    ).decode()
    with OfferPeer() as peer:
        resp = post_connect(stack, peer.offer, **{"x-ms-client-principal": principal})
        assert resp.status_code == 201, resp.text
        assert resp.headers["Content-Type"].startswith("application/sdp")
        call_id = resp.headers["x-call-id"]
        live = requests.get(f"{stack.emulator.url}/_emulator/calls/{call_id}", timeout=5).json()
        assert live["state"] == "live"  # the answer is the emulator's, for this call
        peer.accept(resp.text, wait_open=15)
    assert resp.headers["Access-Control-Allow-Origin"] == PAGE_ORIGIN
    assert "x-call-id" in resp.headers["Access-Control-Expose-Headers"]
    assert resp.headers["x-listener"] == "queued"
    [message] = queued_messages(stack)
    assert message.call_id == call_id and message.origin == PAGE_ORIGIN
    assert message.principal["id"] == "u-9"
    assert message.deadline == pytest.approx(message.started_at + 900)


def test_seed_page_multipart_form_connects(stack):
    with OfferPeer() as peer:
        body, ctype = encode_multipart_formdata({"sdp": peer.offer})
        resp = post_connect(stack, body, ctype, origin=None)  # the seed page: same origin, no header
        assert resp.status_code == 201, resp.text
        peer.accept(resp.text, wait_open=15)
    assert [m.call_id for m in queued_messages(stack)] == [resp.headers["x-call-id"]]


def test_hangup_and_token_and_health(stack, offer):
    resp = requests.get(stack.url + "/api/token", headers={"Origin": PAGE_ORIGIN}, timeout=10)
    assert resp.status_code == 200 and set(resp.json()) == {"token", "expires_at", "endpoint", "deployment"}
    answer = post_connect(stack, offer)
    call_id, capability = answer.headers["x-call-id"], answer.headers["x-call-capability"]
    # only the call's creator may hang it up: no capability, or another's, is refused
    resp = requests.post(f"{stack.url}/api/calls/{call_id}/hangup", timeout=10)
    assert resp.status_code == 401 and error(resp)["code"] == "capability_required"
    wrong = {"x-call-capability": capability[::-1]}
    resp = requests.post(f"{stack.url}/api/calls/{call_id}/hangup", headers=wrong, timeout=10)
    assert resp.status_code == 403 and error(resp)["code"] == "capability_invalid"
    headers = {"Origin": PAGE_ORIGIN, "x-call-capability": capability}
    resp = requests.post(f"{stack.url}/api/calls/{call_id}/hangup", headers=headers, timeout=10)
    assert resp.status_code == 200 and resp.json()["status"] == "ended"
    health = requests.get(stack.url + "/api/health", timeout=10)
    assert health.status_code == 200
    assert health.json()["checks"] == {"settings": "ok", "identity": "ok", "storage": "ok"}


FAULTS = [
    (429, "client_secrets", {"status": 429, "retry_after": 60, "times": 0}, "upstream_throttled"),
    (429, "calls", {"status": 429, "retry_after": 7}, "upstream_throttled"),
    (502, "calls", {"no_location": True}, "upstream_bad_response"),
    (502, "calls", {"status": 201, "body": "<html>", "content_type": "text/html"}, "upstream_bad_response"),
    (502, "calls", {"status": 500}, "upstream_error"),
    (504, "calls", {"delay": 3.0}, "upstream_timeout"),
]


def test_every_error_status_and_no_secret_in_the_host_logs(stack, offer):
    emulator = stack.emulator
    assert post_connect(stack, offer).status_code == 201  # warm: a token is cached in the host
    results = {}
    for status, target, spec, code in FAULTS:
        emulator.set_fault(target, **spec)
        resp = post_connect(stack, offer)
        emulator.clear_faults()
        assert (resp.status_code, error(resp)["code"]) == (status, code), resp.text
        if status == 429:
            assert resp.headers["Retry-After"] == str(spec["retry_after"])
        results[code] = resp
    for body, ctype, status in (
        (b"", "application/sdp", 400),
        (b"hello", "application/sdp", 400),
        (b"v=0\r\nm=video 9 RTP 0\r\n", "application/sdp", 400),
        (offer.encode(), "application/json", 415),
        (b"v=0\r\n" + b"a" * 100_000, "application/sdp", 413),
    ):
        resp = post_connect(stack, body, ctype)
        assert resp.status_code == status, resp.text
        error(resp)
    resp = post_connect(stack, offer, origin="https://evil.example.com")
    assert resp.status_code == 403 and "Access-Control-Allow-Origin" not in resp.headers
    assert post_connect(stack, offer).status_code == 201
    # The host's whole log (the gateway's and the libraries' lines) holds no issued secret.
    token = requests.get(stack.url + "/api/token", timeout=10).json()["token"]
    logs = stack.logs
    assert "POST connect -> 201" in logs and "POST connect -> 504" in logs and token.startswith("ek_")
    assert "ek_" not in logs and "entra_" not in logs
    assert emulator.stats()["client_secrets"] > 0


@pytest.mark.parametrize("stack", [{"IDENTITY_ENDPOINT": "http://127.0.0.1:9/msi/token"}], indirect=True)
def test_identity_unreachable_is_503_and_health_says_so(stack, offer):
    resp = post_connect(stack, offer)
    assert resp.status_code == 503 and error(resp)["code"] == "identity_unavailable"
    health = requests.get(stack.url + "/api/health", timeout=30)
    assert health.status_code == 503 and "token" in health.json()["checks"]["identity"]


@pytest.mark.parametrize("stack", [{"MAX_CALL_SECONDS": "forever"}], indirect=True)
def test_bad_setting_is_a_500_naming_it_on_every_route(stack):
    for method, path in (
        ("POST", "/api/connect"),
        ("GET", "/api/token"),
        ("GET", "/api/health"),
        ("POST", "/api/calls/rtc_x/hangup"),
    ):
        resp = requests.request(method, stack.url + path, timeout=10)
        assert resp.status_code == 500 and "MAX_CALL_SECONDS" in error(resp)["message"]


def test_cors_preflight_allowed_and_denied(stack):
    for path, method in (("/api/connect", "POST"), ("/api/token", "GET"), ("/api/calls/rtc_1/hangup", "POST")):
        resp = requests.options(
            stack.url + path,
            headers={
                "Origin": PAGE_ORIGIN,
                "Access-Control-Request-Method": method,
                "Access-Control-Request-Headers": "content-type",
            },
            timeout=10,
        )
        assert resp.status_code == 204, (path, resp.text)
        assert resp.headers["Access-Control-Allow-Origin"] == PAGE_ORIGIN
        assert method in resp.headers["Access-Control-Allow-Methods"]
        assert "content-type" in resp.headers["Access-Control-Allow-Headers"].lower()
    denied = requests.options(
        stack.url + "/api/connect",
        headers={"Origin": "https://evil.example.com", "Access-Control-Request-Method": "POST"},
        timeout=10,
    )
    assert denied.status_code == 403 and "Access-Control-Allow-Origin" not in denied.headers


def test_full_app_wiring_serves_the_gateway(gateway_stack_factory):
    """The repo's own function_app (listener included) answers a raw-SDP call through the host."""
    stack = gateway_stack_factory(origins=(PAGE_ORIGIN,))
    with OfferPeer() as peer:
        resp = post_connect(stack, peer.offer)
        assert resp.status_code == 201, resp.text
        peer.accept(resp.text, wait_open=15)
        assert resp.headers["x-listener"] == "queued"
