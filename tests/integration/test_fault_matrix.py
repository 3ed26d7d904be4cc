"""The fault matrix of `POST /api/connect`: each upstream step (identity token, client secret, SDP
post) under each fault the emulator can make (refused connection, timeout, 401, 403, 404, 429 with
Retry-After, 500, 503, malformed body, redirect), plus the queue send failing. Every outcome must
be a documented status and code, never a 500; the SDP post is never retried, the mint at most 3
times; a failed call queues no listener message (so the archive shows nothing for it). The matrix
is printed (`-s`) and kept in the README."""

from __future__ import annotations

import json
import logging
import re

import pytest

from local.processes import free_port
from local.testing.offer import OfferPeer
from realtime_gateway import services as services_state
from realtime_gateway.gateway import routes
from realtime_gateway.gateway.http import Request, handle
from realtime_gateway.services import Services
from realtime_gateway.settings import load_settings
from realtime_gateway.upstream.identity import BearerTokenProvider

ORIGIN = "https://app.example.com"
TIMEOUT = 1.0
FAULTS = {
    "401": {"status": 401},
    "403": {"status": 403},
    "404": {"status": 404},
    "429 Retry-After: 1": {"status": 429, "retry_after": 1},
    "500": {"status": 500},
    "503": {"status": 503},
    "malformed body": {"status": 200, "body": "<html>not what was asked</html>", "content_type": "text/html"},
    "redirect": {"redirect": True},
    "timeout": {"delay": TIMEOUT + 1.5},
}
STEPS = {"identity token": "identity", "client secret": "client_secrets", "SDP post": "calls"}
DOCUMENTED = {
    (429, "upstream_throttled"),
    (502, "upstream_bad_response"),
    (502, "upstream_error"),
    (502, "upstream_auth"),
    (502, "upstream_unreachable"),
    (503, "identity_unavailable"),
    (504, "upstream_timeout"),
    (400, "sdp_rejected"),
}
ROWS: list[tuple[str, str, str, str, str]] = []
# Secret hygiene: everything a caller or an operator sees, and every secret the emulator issued.
SEEN: list[str] = []
ISSUED: set[str] = set()
SECRET = re.compile(r"(?:entra|ek)_[0-9a-f]{48}")  # the emulator's Entra tokens and ephemeral keys


def remember_issued(response, *args, **kwargs):
    ISSUED.update(SECRET.findall(response.text or ""))


def gateway(endpoint: str, emulator) -> Services:
    settings = load_settings(
        {
            "AZURE_OPENAI_ENDPOINT": endpoint,
            "AZURE_OPENAI_DEPLOYMENT": "gpt-realtime",
            "ALLOWED_ORIGINS": ORIGIN,
            "HTTP_TIMEOUT_SECONDS": str(TIMEOUT),
            # no storage here (env={}), and every try counted: limits and the secret pool are off
            "RATE_LIMIT_PER_MINUTE": "0",
            "MAX_ACTIVE_CALLS": "0",
            "DAILY_SPEND_LIMIT_USD": "0",
            "CONTROL_RATE_PER_MINUTE": "0",
            "SECRET_POOL_SIZE": "0",
        }
    )
    gw = Services(settings)
    gw.tokens = gw.api.tokens = BearerTokenProvider(gw.settings)  # no cached token: each case fetches
    gw.api.session.hooks["response"].append(remember_issued)
    services_state.reset_services(gw)
    return gw


@pytest.fixture
def identity_env(emulator, monkeypatch, caplog):
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("IDENTITY_ENDPOINT", emulator.identity_endpoint)
    monkeypatch.setenv("IDENTITY_HEADER", emulator.identity_header)
    monkeypatch.delenv("AZURE_CLIENT_ID", raising=False)
    yield
    SEEN.append(caplog.text)
    ISSUED.update(SECRET.findall(caplog.text))  # a leak would be counted as issued and found
    services_state.reset_services()


@pytest.fixture(scope="module")
def offer():
    with OfferPeer() as peer:
        yield peer.offer


def connect(offer: str, enqueue=None):
    queued: list[str] = []
    resp = handle(
        routes.connect,
        services_state.get_services,
        Request("POST", "http://h/api/connect", {"Content-Type": "application/sdp", "Origin": ORIGIN}, offer.encode()),
        enqueue=enqueue or queued.append,
    )
    code = json.loads(resp.body)["error"]["code"] if resp.status >= 400 else ""
    SEEN.extend([resp.body.decode("utf-8", "replace"), json.dumps(resp.headers), *queued])
    return resp, code, queued


@pytest.mark.parametrize("fault", list(FAULTS))
@pytest.mark.parametrize("step", list(STEPS))
def test_each_step_under_each_fault(emulator, identity_env, offer, step, fault):
    gateway(emulator.url, emulator)
    target = STEPS[step]
    emulator.set_fault(target, times=0, **FAULTS[fault])  # until cleared: count every try
    before = emulator.faults.applied
    resp, code, queued = connect(offer)
    tries = emulator.faults.applied - before
    emulator.clear_faults()
    ROWS.append((step, fault, f"{resp.status} {code}".strip(), str(tries), "none" if not queued else "queued"))
    assert resp.status != 500, resp.body
    if resp.status >= 400:
        assert (resp.status, code) in DOCUMENTED, (resp.status, code)
        assert not queued  # no call, no listener message, nothing archived
        if resp.status == 429:
            assert resp.headers.get("Retry-After")
    if target == "calls":
        assert tries <= 1  # the SDP post is never retried: the service may have started a call
    if target == "client_secrets":
        assert tries <= 3


def test_refused_connection_and_a_failing_queue_send(emulator, identity_env, offer):
    gateway(f"http://127.0.0.1:{free_port()}", emulator)  # nothing listens there
    resp, code, queued = connect(offer)
    ROWS.append(("client secret", "refused connection", f"{resp.status} {code}", "-", "none"))
    assert (resp.status, code) == (502, "upstream_unreachable") and not queued

    gateway(emulator.url, emulator)

    def broken(_):
        raise OSError("queue unreachable")

    resp, code, _ = connect(offer, enqueue=broken)
    ROWS.append(("queue send", "raises", f"{resp.status} x-listener: {resp.headers.get('x-listener')}", "0", "none"))
    assert resp.status == 201 and resp.headers["x-listener"] == "not-queued"
    ROWS.append(("the limiter's storage", "any", "n/a until the limiter lands", "-", "-"))


def test_print_the_matrix():
    print("\n| step | fault | caller gets | upstream tries | listener message |")
    print("|---|---|---|---|---|")
    for row in ROWS:
        print("| " + " | ".join(row) + " |")
    print(f"{len(ROWS)} cases")
    found = [secret for secret in ISSUED if any(secret in text for text in SEEN)]
    print(
        f"secret hygiene: {len(SEEN)} log captures, bodies, headers and queue messages; "
        f"{len(ISSUED)} secrets seen on the wire; secrets found: {len(found)}"
    )
    assert not found
