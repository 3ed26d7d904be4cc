"""The handlers' envelope without upstream calls: CORS allowlist and preflight, request ids,
settings errors as 500 JSON naming the setting on every route, input errors before any upstream."""

import json

import pytest

from realtime_gateway import services as services_state
from realtime_gateway.gateway import routes
from realtime_gateway.gateway.http import Request, handle
from realtime_gateway.services import Services
from realtime_gateway.settings import load_settings

ROUTES = [
    (routes.connect, "POST", {}),
    (routes.token, "GET", {}),
    (routes.hangup, "POST", {"call_id": "rtc_1"}),
    (routes.health, "GET", {}),
]
ENV = {
    "AZURE_OPENAI_ENDPOINT": "http://127.0.0.1:9",
    "AZURE_OPENAI_DEPLOYMENT": "gpt-realtime",
    "ALLOWED_ORIGINS": "https://app.example.com,http://127.0.0.1:8080",
    # no storage here (env={}): the limits, which live in storage, are tested in test_limits_host
    "RATE_LIMIT_PER_MINUTE": "0",
    "MAX_ACTIVE_CALLS": "0",
    "DAILY_SPEND_LIMIT_USD": "0",
    "CONTROL_RATE_PER_MINUTE": "0",
}


@pytest.fixture
def gateway():
    settings = load_settings(ENV)
    services_state.reset_services(Services(settings))
    yield
    services_state.reset_services()


def error(resp):
    return json.loads(resp.body)["error"]


@pytest.mark.parametrize("route,method,kw", ROUTES)
def test_preflight_from_an_allowed_origin(gateway, route, method, kw):
    resp = handle(
        route,
        services_state.get_services,
        Request(
            "OPTIONS",
            "http://h/api/x",
            {
                "Origin": "https://app.example.com",
                "Access-Control-Request-Method": method,
                "Access-Control-Request-Headers": "content-type",
            },
        ),
        **kw,
    )
    assert resp.status == 204
    assert resp.headers["Access-Control-Allow-Origin"] == "https://app.example.com"
    assert method in resp.headers["Access-Control-Allow-Methods"]
    assert "content-type" in resp.headers["Access-Control-Allow-Headers"]
    assert "x-call-id" in resp.headers["Access-Control-Expose-Headers"]
    assert resp.headers["Vary"] == "Origin"


@pytest.mark.parametrize(
    "origin", ["https://evil.example.com", "https://app.example.com.evil.io", "http://app.example.com", "null"]
)
def test_other_origins_get_403_without_cors_headers(gateway, origin):
    for method in ("OPTIONS", "POST"):
        resp = handle(
            routes.connect,
            services_state.get_services,
            Request(method, "http://h/api/connect", {"Origin": origin}),
        )
        assert resp.status == 403
        assert error(resp)["code"] == "origin_not_allowed"
        assert "Access-Control-Allow-Origin" not in resp.headers


def test_wildcard_only_when_configured():
    services_state.reset_services(Services(load_settings({**ENV, "ALLOWED_ORIGINS": "*"})))
    try:
        resp = handle(
            routes.connect,
            services_state.get_services,
            Request("OPTIONS", "http://h/api/connect", {"Origin": "https://any.io"}),
        )
        assert resp.status == 204 and resp.headers["Access-Control-Allow-Origin"] == "https://any.io"
    finally:
        services_state.reset_services()


def test_input_errors_carry_cors_and_request_id(gateway):
    resp = handle(
        routes.connect,
        services_state.get_services,
        Request(
            "POST",
            "http://h/api/connect",
            {"Origin": "http://127.0.0.1:8080", "Content-Type": "text/plain", "x-request-id": "req-12345678"},
            b"v=0",
        ),
    )
    assert resp.status == 415
    body = error(resp)
    assert body["code"] == "unsupported_media_type" and body["request_id"] == "req-12345678"
    assert resp.headers["x-request-id"] == "req-12345678"
    assert resp.headers["Access-Control-Allow-Origin"] == "http://127.0.0.1:8080"
    assert resp.mimetype == "application/json"


def test_unsafe_request_ids_are_replaced(gateway):
    resp = handle(
        routes.connect,
        services_state.get_services,
        Request("POST", "http://h/api/connect", {"x-request-id": "bad id\r\nx: y"}, b""),
    )
    assert resp.status == 415
    rid = resp.headers["x-request-id"]
    assert rid != "bad id\r\nx: y" and len(rid) == 32 and error(resp)["request_id"] == rid


def test_principal_required(gateway):
    settings = load_settings({**ENV, "REQUIRE_PRINCIPAL": "true", "WEBSITE_AUTH_ENABLED": "true"})
    services_state.reset_services(Services(settings))
    resp = handle(
        routes.connect,
        services_state.get_services,
        Request("POST", "http://h/api/connect", {"Content-Type": "application/sdp"}, b"v=0\r\nm=audio 9 RTP 0\r\n"),
    )
    assert resp.status == 401 and error(resp)["code"] == "principal_required"


def test_token_route_can_be_switched_off(gateway):
    services_state.reset_services(Services(load_settings({**ENV, "TOKEN_ROUTE_ENABLED": "false"})))
    resp = handle(routes.token, services_state.get_services, Request("GET", "http://h/api/token"))
    assert resp.status == 404 and error(resp)["code"] == "token_route_disabled"


def test_malformed_call_id_is_400(gateway):
    resp = handle(
        routes.hangup,
        services_state.get_services,
        Request("POST", "http://h/api/calls/x/hangup"),
        call_id="a b",
    )
    assert resp.status == 400 and error(resp)["code"] == "invalid_call_id"


@pytest.mark.parametrize("route,method,kw", ROUTES)
def test_bad_settings_are_a_500_naming_the_setting_on_every_route(monkeypatch, route, method, kw):
    for name in ("AZURE_OPENAI_ENDPOINT", "AZURE_OPENAI_RESOURCE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AZURE_OPENAI_DEPLOYMENT", "gpt-realtime")
    monkeypatch.setenv("MAX_CALL_SECONDS", "forever")
    services_state.reset_services()
    try:
        for _ in range(2):  # the same clear answer each time, not a crash then silence
            resp = handle(
                route, services_state.get_services, Request(method, "http://h/api/" + route.__name__, {}), **kw
            )
            assert resp.status == 500
            body = error(resp)
            assert body["code"] == "invalid_settings"
            assert "AZURE_OPENAI_ENDPOINT" in body["message"] and "MAX_CALL_SECONDS" in body["message"]
    finally:
        services_state.reset_services()
