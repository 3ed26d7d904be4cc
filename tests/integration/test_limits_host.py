"""The limits through the local functions host, against the emulator and Azurite: per-client rate
(the host sets X-Forwarded-For as the App Service front end does, so a forged one is harmless),
one limit across two host processes, the active-call cap, the daily budget with "tomorrow" reached
by a second host with a clock offset, usage in the session row equal to the archived response.done
events, and an unreachable limits table."""

from __future__ import annotations

import json
import secrets
from datetime import UTC, datetime
from urllib.parse import urlsplit

import pytest
import requests
import urllib3
from azure.data.tables import TableServiceClient

from local.processes import free_port
from local.testing.calls import end_and_wait, script, start_recorded_call
from local.testing.host_process import wait_until
from local.testing.offer import OfferPeer
from realtime_gateway.archive.store import Archive
from realtime_gateway.core import usage as u
from realtime_gateway.settings import PRICES
from tests.fixtures.limits import clear_of_minute_edge

LISTENER_OFF = {"AzureWebJobs.call_listener.Disabled": "true"}
# no client secrets minted ahead in the background: the tests count mints to prove a refusal made none
NO_POOL = {"SECRET_POOL_SIZE": "0"}
TOKEN_ON = {"TOKEN_ROUTE_ENABLED": "true"}  # off by default; these tests count it against the rate


def send(url: str, method: str = "GET", source: str = "127.0.0.1", body: bytes | None = None, **headers):
    """A request from `source` (any 127.x address is this machine): a second client on loopback."""
    parts = urlsplit(url)
    pool = urllib3.HTTPConnectionPool(parts.hostname, parts.port, source_address=(source, 0), retries=False)
    return pool.request(method, parts.path, body=body, headers=headers, timeout=30)


def connect(stack, offer: str, source: str = "127.0.0.1", **headers):
    return send(
        stack.url + "/api/connect", "POST", source, offer.encode(), **{"Content-Type": "application/sdp", **headers}
    )


def refusal(resp, code: str) -> int:
    assert resp.status == 429, resp.data
    body = json.loads(resp.data)["error"]
    assert body["code"] == code and body["request_id"] == resp.headers["x-request-id"]
    return int(resp.headers["Retry-After"])


@pytest.fixture(scope="module")
def offer():
    with OfferPeer() as peer:
        yield peer.offer


def test_a_burst_from_one_client_is_limited_while_another_gets_through(gateway_stack_factory, offer):
    stack = gateway_stack_factory(RATE_LIMIT_PER_MINUTE=3, **LISTENER_OFF, **NO_POOL, **TOKEN_ON)
    clear_of_minute_edge()
    minted = stack.emulator.stats()["client_secrets"]
    assert send(stack.url + "/api/token").status == 200
    assert connect(stack, offer).status == 201
    assert send(stack.url + "/api/token").status == 200
    # the fourth from 127.0.0.1 is refused, whatever X-Forwarded-For it claims
    assert 1 <= refusal(send(stack.url + "/api/token", **{"X-Forwarded-For": "10.9.9.9"}), "rate_limited") <= 60
    refusal(connect(stack, offer, **{"X-Forwarded-For": "10.9.9.8, 10.9.9.7"}), "rate_limited")
    assert stack.emulator.stats()["client_secrets"] == minted + 3  # refusals never reached the service
    assert connect(stack, offer, source="127.0.0.2").status == 201  # another client
    assert send(stack.url + "/api/health").json()["refusals"] == {"rate_limited": 2}  # counted
    logs = stack.host.wait_for_log("code=rate_limited", count=2)
    assert "client=ip-127.0.0.1 code=rate_limited" in logs and "client=ip-127.0.0.2" not in logs


def test_two_host_processes_sharing_one_azurite_enforce_one_limit(gateway_stack_factory):
    table = f"limits{secrets.token_hex(4)}"
    a = gateway_stack_factory(RATE_LIMIT_PER_MINUTE=4, LIMITS_TABLE=table, **LISTENER_OFF, **TOKEN_ON)
    b = gateway_stack_factory(RATE_LIMIT_PER_MINUTE=4, LIMITS_TABLE=table, **LISTENER_OFF, **TOKEN_ON)
    clear_of_minute_edge()
    statuses = [send(stack.url + "/api/token").status for stack in (a, b) * 4]
    assert statuses.count(200) == 4 and statuses.count(429) == 4
    assert statuses[:4] == [200] * 4  # admitted in arrival order, whichever host took them


def test_the_active_call_cap_frees_a_slot_when_a_call_ends(gateway_stack_factory, offer):
    stack = gateway_stack_factory(MAX_ACTIVE_CALLS=1)
    first = connect(stack, offer)
    assert first.status == 201
    call_id = first.headers["x-call-id"]
    wait_until(lambda: stack.emulator.stats()["sideband_connections"] and "sideband attached" in stack.logs, 20)
    assert refusal(connect(stack, offer), "too_many_active_calls") <= 60
    capability = {"x-call-capability": first.headers["x-call-capability"]}
    assert send(f"{stack.url}/api/calls/{call_id}/hangup", "POST", **capability).status == 200
    stack.host.wait_for_log(f"call {call_id}: listener 0 done: ended")
    assert connect(stack, offer).status == 201


def test_usage_is_summed_priced_and_a_spent_budget_waits_for_tomorrow(gateway_stack_factory, offer):
    table = f"limits{secrets.token_hex(4)}"
    stack = gateway_stack_factory(DAILY_TOKEN_BUDGET=200, LIMITS_TABLE=table)
    with OfferPeer() as peer:  # a real peer: the emulator's spoken replies need media to flow
        resp = connect(stack, peer.offer)
        assert resp.status == 201
        peer.accept(resp.data.decode(), wait_open=15)
        call_id = resp.headers["x-call-id"]
        wait_until(lambda: "sideband attached" in stack.logs, 20)
        script = requests.post(
            f"{stack.emulator.url}/_emulator/calls/{call_id}/script", json={"responses": 3}, timeout=60
        )
        assert script.status_code == 200
        capability = {"x-call-capability": resp.headers["x-call-capability"]}
        assert send(f"{stack.url}/api/calls/{call_id}/hangup", "POST", **capability).status == 200
    stack.host.wait_for_log(f"call {call_id}: listener 0 done: ended")

    tables = TableServiceClient.from_connection_string(stack.azurite.connection_string)
    archive = Archive(tables, stack.settings["ARCHIVE_EVENTS_TABLE"], stack.settings["ARCHIVE_SESSIONS_TABLE"])
    summed: dict[str, float] = {}
    for record in archive.read_events(call_id):
        reported = u.usage_of(record.event_type, record.event())
        if record.event_type == "response.done" and reported:
            u.add(summed, reported)
    assert summed["responses"] == 3 and summed["output_audio_tokens"] > 0
    session = wait_until(
        lambda: (archive.find_session(call_id) or {}).get("cost_usd") and archive.find_session(call_id)
    )
    assert u.from_row(session) == summed
    assert session["cost_usd"] == pytest.approx(u.cost_usd(summed, PRICES))
    day = datetime.now(UTC).strftime("%Y%m%d")
    row = tables.get_table_client(table).get_entity(f"usage-{day}", "app")
    assert u.from_row(row) == summed and row["calls"] == 1 and row["call_seconds"] > 0
    assert u.budget_tokens(summed) >= 200  # so the day's budget is spent

    wait = refusal(connect(stack, offer), "budget_exhausted")
    now = datetime.now(UTC)
    assert abs(wait - (86400 - (now.hour * 3600 + now.minute * 60 + now.second))) <= 5
    # "tomorrow" (a new day row) and an unattached slot's expiry: test_limits_table.py, with a clock


def test_an_unreachable_limits_table_fails_open_for_the_rate_and_closed_for_calls(gateway_stack_factory, offer):
    probe = gateway_stack_factory(**LISTENER_OFF)  # for the emulator's and Azurite's addresses
    dead = probe.azurite.connection_string.replace(f":{probe.azurite.table_port}/", f":{free_port()}/")
    # the token route checks only the rate here: the spend bound would refuse it closed, as it does calls
    stack = gateway_stack_factory(
        AzureWebJobsStorage=dead, DAILY_SPEND_LIMIT_USD=0, **LISTENER_OFF, **NO_POOL, **TOKEN_ON
    )  # queues still up
    minted = stack.emulator.stats()["client_secrets"]
    assert send(stack.url + "/api/token").status == 200  # RATE_LIMIT_FAIL_OPEN=true (default)
    resp = connect(stack, offer)
    assert resp.status == 503 and json.loads(resp.data)["error"]["code"] == "limits_unavailable"
    assert resp.headers["Retry-After"] == "30"
    assert stack.emulator.stats()["client_secrets"] == minted + 1  # the refused call minted nothing
    assert "budget not checked, storage unavailable" in stack.logs


@pytest.mark.parametrize("hang_up", [False, True])
def test_a_running_call_is_charged_as_it_goes_and_a_spent_budget_can_hang_it_up(gateway_stack_factory, hang_up):
    """Usage reaches the day's row while the call runs (so the budget sees running calls); with
    BUDGET_HANGUP_RUNNING the spent budget ends the call, without it the call goes on."""
    table = f"limits{secrets.token_hex(4)}"
    stack = gateway_stack_factory(DAILY_TOKEN_BUDGET=40, LIMITS_TABLE=table, BUDGET_HANGUP_RUNNING=str(hang_up).lower())
    tables = TableServiceClient.from_connection_string(stack.azurite.connection_string)
    archive = Archive(tables, stack.settings["ARCHIVE_EVENTS_TABLE"], stack.settings["ARCHIVE_SESSIONS_TABLE"])
    call_id = start_recorded_call(
        stack.emulator.url, stack.azurite.connection_string, stack.settings["LISTENER_QUEUE"], archive
    )
    hangups = stack.emulator.stats()["hangups"]
    script(stack.emulator.url, call_id, 1)  # one typed turn: about 50 tokens
    day = datetime.now(UTC).strftime("%Y%m%d")

    def charged():
        try:
            return tables.get_table_client(table).get_entity(f"usage-{day}", "app")
        except Exception:
            return None

    row = wait_until(charged, 20, what="the day's usage row written while the call runs")
    assert u.budget_tokens(u.from_row(row)) >= 40
    if hang_up:
        session = wait_until(
            lambda: (s := archive.find_session(call_id) or {}).get("state") == "ended" and s, 30, what="hung up"
        )
        assert session["end_reason"] == "budget" and "budget is spent" in session["end_detail"]
        assert stack.emulator.stats()["hangups"] == hangups + 1
    else:
        assert not row.get("calls")  # charged while the call still runs
        script(stack.emulator.url, call_id, 1)  # the call goes on: its next turn is answered
        assert (archive.find_session(call_id) or {}).get("state") == "attached"
        session = end_and_wait(stack.emulator.url, call_id, archive)
        assert session["end_reason"] == "ended"
    stack.host.wait_for_log(f"call {call_id}: listener 0 done: ended")
    # charged once in all: the final charge adds only what the running charges had not
    row = wait_until(lambda: (r := charged()) and r.get("calls") == 1 and r, 20, what="the final charge")
    assert u.from_row(row) == u.from_row(archive.find_session(call_id))
