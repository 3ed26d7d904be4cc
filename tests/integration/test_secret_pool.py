"""The client-secret pool against the emulator, through the /connect handler: a warm pool mints
nothing inline and gives each call its own secret; a 401 on the SDP post with a pooled secret is
retried once with a fresh mint; a policy change empties the pool; secrets are replaced before
their lead time; /api/token never touches the pool. (The pool's settings are checked in
tests/unit/test_settings.py; the gateway and helpers are tests/fixtures/secret_pool.py.)"""

import dataclasses
import logging
import time

import pytest

from local.testing.host_process import wait_until
from local.testing.offer import OfferPeer
from realtime_gateway import services as services_state
from realtime_gateway.gateway import routes
from realtime_gateway.gateway.http import Request, handle
from tests.fixtures.secret_pool import connect, hangup, make_gateway, warm


@pytest.fixture
def gw(emulator, monkeypatch):
    yield make_gateway(emulator, monkeypatch)
    services_state.reset_services()


@pytest.fixture(scope="module")
def offer():
    with OfferPeer() as peer:
        yield peer.offer


def test_cold_pool_mints_inline_then_warm_pool_mints_nothing_inline(gw, emulator, offer, caplog):
    caplog.set_level(logging.DEBUG)
    pool = gw.secret_pool
    resp = connect(offer.encode())
    assert resp.status == 201 and pool.stats["inline"] == 1 and pool.stats["pooled"] == 0
    hangup(resp.headers["x-call-id"])
    for _ in range(4):
        warm(gw)
        resp = connect(offer.encode())
        assert resp.status == 201, resp.body
        hangup(resp.headers["x-call-id"])
    assert pool.stats["inline"] == 1 and pool.stats["pooled"] == 4
    # each call used its own secret, and every one of them came from the emulator's mint
    assert len(gw.wire.offer_secrets) == 5 and len(set(gw.wire.offer_secrets)) == 5
    warm(gw)
    assert pool.stats["background"] == 6  # 4 taken and replaced + the 2 that are pooled now
    assert "ek_" not in caplog.text and "entra_" not in caplog.text


def test_401_on_the_sdp_post_with_a_pooled_secret_is_retried_once_with_a_fresh_mint(gw, emulator, offer):
    connect(offer.encode())  # starts the pool
    warm(gw)
    pool = gw.secret_pool
    emulator.set_fault("calls", status=401, times=1)
    resp = connect(offer.encode())
    assert resp.status == 201, resp.body
    hangup(resp.headers["x-call-id"])
    assert pool.stats["retried_401"] == 1 and pool.stats["inline"] == 2
    assert gw.wire.offer_secrets[-1] != gw.wire.offer_secrets[-2]  # the retry's secret is new
    # Refused twice: one retry only, then the caller gets the upstream_auth error.
    warm(gw)
    emulator.set_fault("calls", status=401, times=2)
    resp = connect(offer.encode())
    assert resp.status == 502 and b"upstream_auth" in resp.body
    assert pool.stats["retried_401"] == 2 and pool.stats["inline"] == 3


def test_inline_mint_that_is_refused_is_not_retried(emulator, monkeypatch, offer):
    gw = make_gateway(emulator, monkeypatch, SECRET_POOL_SIZE="0")
    try:
        emulator.set_fault("calls", status=401, times=1)
        resp = connect(offer.encode())
        assert resp.status == 502 and b"upstream_auth" in resp.body
        assert gw.secret_pool.stats["inline"] == 1 and gw.secret_pool.stats["retried_401"] == 0
        assert len(gw.secret_pool) == 0  # off: no background mints either
    finally:
        services_state.reset_services()


def test_policy_change_empties_the_pool(gw, emulator, offer):
    connect(offer.encode())
    warm(gw)
    pool = gw.secret_pool
    new_policy = {**gw.settings.session_policy, "instructions": "Answer in French."}
    gw.api.settings = dataclasses.replace(gw.settings, session_policy=new_policy)
    resp = connect(offer.encode())
    assert resp.status == 201
    hangup(resp.headers["x-call-id"])
    assert pool.stats["emptied"] == 2 and pool.stats["inline"] == 2 and pool.stats["pooled"] == 0
    warm(gw)
    assert gw.wire.minted_instructions[-2:] == ["Answer in French."] * 2
    resp = connect(offer.encode())
    assert resp.status == 201 and pool.stats["pooled"] == 1 and pool.stats["inline"] == 2
    hangup(resp.headers["x-call-id"])


def test_secrets_are_replaced_before_their_lead_time(emulator, monkeypatch, offer):
    gw = make_gateway(
        emulator, monkeypatch, SECRET_POOL_SIZE="1", SECRET_POOL_TTL_SECONDS="10", SECRET_POOL_LEAD_SECONDS="4"
    )
    pool = gw.secret_pool
    try:
        assert pool.take() is None  # cold: starts the refill thread
        warm(gw)
        first = pool._items[0][0]
        # After 10 - 4 = 6 s the pooled secret must have been replaced without anyone asking.
        wait_until(lambda: pool.stats["expired"] >= 1 and len(pool) == 1, 12, 0.05, what="a replaced secret")
        taken = pool.take()
        assert taken is not None and taken != first
        assert taken.expires_at - time.time() > gw.settings.secret_pool_lead
    finally:
        services_state.reset_services()


def test_token_route_never_uses_the_pool(gw, emulator, offer):
    connect(offer.encode())
    warm(gw)
    before = dict(gw.secret_pool.stats)
    resp = handle(routes.token, services_state.get_services, Request("GET", "http://h/api/token"))
    assert resp.status == 200
    assert gw.secret_pool.stats == before and len(gw.secret_pool) == 2
