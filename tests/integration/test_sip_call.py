"""A phone call end to end on loopback: the emulator rings (admin `/admin/sip/calls`), delivers the
signed webhook to the local host, which verifies it, admits the call through the limiter, accepts it
with the server's policy and queues the listener; the emulator's scripted caller speaks, presses keys
and hangs up; the archive holds the call (`channel` sip, DTMF rows, `caller_hangup`), `verify`
passes, and the auditor's `show` and `report` list the keys pressed. The caller's number is nowhere in plain text: every table row, the host's log and
all the telemetry it exports (spans, log records, metrics over OTLP) are swept.
Every webhook validates against the `openai` package's event type and signature check, every accept
body against its CallAcceptParams."""

from __future__ import annotations

import base64
import json

import pytest
import requests
from openai import OpenAI
from openai.types.realtime.call_accept_params import CallAcceptParams
from openai.types.webhooks import RealtimeCallIncomingWebhookEvent
from pydantic import TypeAdapter

from local.testing.host_process import wait_until
from local.testing.otlp_sink import OtlpSink
from realtime_gateway.archive.tables import table_service_from_env
from realtime_gateway.audit.cli import main as audit_main
from realtime_gateway.audit.verify import verify_call
from tests.fixtures.limits import clear_of_minute_edge
from tests.fixtures.phone import LINE, SALT, SECRET, archive_of, phone_call, ring

ORACLE = OpenAI(api_key="unused", base_url="http://127.0.0.1:9").webhooks
# the SDK's own knobs: the host exports spans and logs within a fraction of a second
FAST_EXPORT = {
    "OTEL_BSP_SCHEDULE_DELAY": "100",
    "OTEL_BLRP_SCHEDULE_DELAY": "100",
    "OTEL_METRIC_EXPORT_INTERVAL": "300",
}


@pytest.fixture
def sink():
    with OtlpSink() as s:
        yield s


@pytest.fixture
def phone(gateway_stack_factory, emulator, sink):
    """A host with phone calls on, exporting its telemetry over OTLP to `sink`."""
    stack = gateway_stack_factory(
        SIP_WEBHOOK_SECRET=SECRET,
        SIP_CALLER_SALT=SALT,
        MAX_ACTIVE_CALLS="2",
        OTEL_EXPORTER_OTLP_ENDPOINT=sink.url,
        **FAST_EXPORT,
    )
    emulator.sip.webhook_url, emulator.sip.webhook_secret = stack.url + "/api/sip/incoming", SECRET
    yield stack
    emulator.sip.webhook_url = emulator.sip.webhook_secret = ""


def check_webhooks(info: dict) -> None:
    assert info["webhooks"]
    for delivery in info["webhooks"]:
        event = RealtimeCallIncomingWebhookEvent.model_validate(json.loads(delivery["body"]))
        assert event.data.call_id == info["call_id"]
        ORACLE.verify_signature(delivery["body"], delivery["headers"], secret=SECRET)
    assert len({d["headers"]["webhook-id"] for d in info["webhooks"]}) == 1  # retries keep the id


def test_a_whole_phone_call_is_accepted_archived_and_verified(phone, emulator, sink, capsys, tmp_path):
    call_id = ring(emulator, say=["hello", "what time do you open"], dtmf="12#")
    archive = archive_of(phone)
    row = wait_until(
        lambda: (r := archive.find_session(call_id)) and r.get("state") == "ended" and r, 40, 0.2, "the call ended"
    )
    info = phone_call(emulator, call_id)
    assert info["state"] == "ended" and info["deliveries"] == [200]
    check_webhooks(info)
    TypeAdapter(CallAcceptParams).validate_python(info["accept_body"])
    assert (
        info["accept_body"]["instructions"]
        and info["accept_body"]["model"] == phone.settings["AZURE_OPENAI_DEPLOYMENT"]
    )
    assert row["channel"] == "sip" and row["end_reason"] == "caller_hangup"
    assert row["called"] == LINE and row["caller"].startswith("h-") and row["sip_call_id"]
    assert int(row["dtmf_events"]) == 3
    dtmf = [e for e in archive.read_events(call_id) if e.event_type == "input_audio_buffer.dtmf_event_received"]
    assert [json.loads(e.payload)["event"] for e in dtmf] == ["1", "2", "#"]
    assert verify_call(archive, call_id).ok
    # the words stay in the events (the row counts them); the auditor reads them with the keys pressed
    assert int(row["user_turns"]) >= 2 and "user_transcript" not in row
    tables = ["--connection-string", phone.azurite.connection_string]
    tables += ["--events-table", phone.settings["ARCHIVE_EVENTS_TABLE"]]
    tables += ["--sessions-table", phone.settings["ARCHIVE_SESSIONS_TABLE"]]
    capsys.readouterr()
    assert audit_main(["show", call_id, *tables]) == 0
    listing = capsys.readouterr().out
    assert "User: hello" in listing
    keys = [line.split("Keypad: ")[1] for line in listing.splitlines() if "Keypad: " in line]
    assert keys == ["pressed 1", "pressed 2", "pressed #"]
    page = tmp_path / "phone.html"
    assert audit_main(["report", call_id, "-o", str(page), *tables]) == 0
    html = page.read_text()
    assert "key presses (3)" in html and html.count('<li class="key">') == 3 and "key # pressed" in html
    # the number nowhere in plain text: every row of every table of this app, and the host's log
    svc = table_service_from_env({"AzureWebJobsStorage": phone.azurite.connection_string})
    for table in ("ARCHIVE_EVENTS_TABLE", "ARCHIVE_SESSIONS_TABLE", "LIMITS_TABLE"):
        for entity in svc.get_table_client(phone.settings[table]).list_entities():
            text = json.dumps(dict(entity), default=str)
            assert "5551230000" not in text, (table, text[:200])
    assert "5551230000" not in phone.logs

    # ... and in no span, span event, log record or metric the host exported: the raw OTLP bytes
    def call_spans() -> list[dict]:
        found = [s for s in sink.spans() if s["attributes"].get("call_id") == call_id]
        return found if {"sip", "listener"} <= {s["name"] for s in found} else []

    spans = wait_until(call_spans, 20, 0.2, "the call's spans exported")
    (webhook,) = [s for s in spans if s["name"] == "sip"]  # one trace: the webhook's span, then the listener's
    assert webhook["attributes"]["channel"] == "sip"
    assert [s["parent"] for s in spans if s["name"] == "listener"] == [webhook["span_id"]]
    assert sink.logs() and all(b"5551230000" not in body for body in sink.raw)


def test_a_replayed_delivery_is_acted_on_once_and_a_forged_one_not_at_all(phone, emulator):
    call_id = ring(emulator, say=["hi"])
    archive = archive_of(phone)
    wait_until(lambda: (archive.find_session(call_id) or {}).get("state") == "ended", 40, 0.2, "the call ended")
    delivery = phone_call(emulator, call_id)["webhooks"][0]
    url = phone.url + "/api/sip/incoming"
    again = requests.post(url, data=delivery["body"].encode(), headers=delivery["headers"], timeout=10)
    assert again.status_code == 200 and again.json()["status"] == "duplicate"
    forged = dict(delivery["headers"], **{"webhook-id": "wh_forged"})  # the id is signed
    resp = requests.post(url, data=delivery["body"].encode(), headers=forged, timeout=10)
    assert resp.status_code == 401
    assert emulator.stats()["calls"] >= 1
    assert phone_call(emulator, call_id)["accept_body"] is not None  # accepted once: a second accept would 404


def test_a_delivery_answered_with_an_error_is_retried_and_accepted(phone, emulator):
    emulator.set_fault("accept", status=500, times=1)  # the first accept fails: the webhook gets 502
    call_id = ring(emulator, say=["hello again"])
    archive = archive_of(phone)
    wait_until(lambda: (archive.find_session(call_id) or {}).get("state") == "ended", 40, 0.2, "the call ended")
    info = phone_call(emulator, call_id)
    assert info["deliveries"][0] >= 500 and info["deliveries"][-1] == 200
    check_webhooks(info)
    assert (archive.find_session(call_id) or {}).get("end_reason") == "caller_hangup"


def test_a_blocked_number_is_declined_with_603_and_archived(gateway_stack_factory, emulator):
    stack = gateway_stack_factory(SIP_WEBHOOK_SECRET=SECRET, SIP_CALLER_SALT=SALT, SIP_BLOCKED_NUMBERS="from:+1555123*")
    emulator.sip.webhook_url, emulator.sip.webhook_secret = stack.url + "/api/sip/incoming", SECRET
    try:
        call_id = ring(emulator, say=["hello"])
        info = wait_until(lambda: (i := phone_call(emulator, call_id))["state"] == "rejected" and i, 20, 0.1, "reject")
        assert info["reject_status"] == 603 and info["accept_body"] is None
        row = wait_until(lambda: archive_of(stack).find_session(call_id), 10, 0.1, "the refusal's row")
        assert (row["state"], row["end_reason"], row["refusal"], row["sip_status"]) == (
            "ended",
            "refused",
            "number_blocked",
            603,
        )
    finally:
        emulator.sip.webhook_url = emulator.sip.webhook_secret = ""


def test_a_limit_refuses_with_486_and_is_archived(gateway_stack_factory, emulator):
    stack = gateway_stack_factory(SIP_WEBHOOK_SECRET=SECRET, SIP_CALLER_SALT=SALT, RATE_LIMIT_PER_MINUTE="1")
    emulator.sip.webhook_url, emulator.sip.webhook_secret = stack.url + "/api/sip/incoming", SECRET
    try:
        clear_of_minute_edge()  # both rings in one rate window
        first = ring(emulator, say=["hello"])
        wait_until(lambda: phone_call(emulator, first)["state"] in ("accepted", "ended"), 20, 0.1, "accepted")
        second = ring(emulator, say=["hello"])  # the same caller within the minute: its rate is spent
        info = wait_until(lambda: (i := phone_call(emulator, second))["state"] == "rejected" and i, 20, 0.1, "reject")
        assert info["reject_status"] == 486 and info["deliveries"] == [200]
        row = wait_until(lambda: archive_of(stack).find_session(second), 10, 0.1, "the refusal's row")
        assert (row["end_reason"], row["refusal"], row["sip_status"], row["channel"]) == (
            "refused",
            "rate_limited",
            486,
            "sip",
        )
    finally:
        emulator.sip.webhook_url = emulator.sip.webhook_secret = ""


def test_two_hosts_sharing_storage_act_on_a_delivery_once(gateway_stack_factory, emulator):
    one = gateway_stack_factory(SIP_WEBHOOK_SECRET=SECRET, SIP_CALLER_SALT=SALT)
    shared = {k: one.settings[k] for k in ("LISTENER_QUEUE", "ARCHIVE_EVENTS_TABLE", "ARCHIVE_SESSIONS_TABLE")}
    two = gateway_stack_factory(
        SIP_WEBHOOK_SECRET=SECRET, SIP_CALLER_SALT=SALT, LIMITS_TABLE=one.settings["LIMITS_TABLE"], **shared
    )
    emulator.sip.webhook_url, emulator.sip.webhook_secret = one.url + "/api/sip/incoming", SECRET
    try:
        call_id = ring(emulator, say=["hello"])
        wait_until(lambda: phone_call(emulator, call_id)["deliveries"] == [200], 20, 0.1, "delivered")
        delivery = phone_call(emulator, call_id)["webhooks"][0]
        resp = requests.post(
            two.url + "/api/sip/incoming", data=delivery["body"].encode(), headers=delivery["headers"], timeout=10
        )
        assert resp.status_code == 200 and resp.json()["status"] == "duplicate"
    finally:
        emulator.sip.webhook_url = emulator.sip.webhook_secret = ""


def test_a_call_nobody_answers_ends_unanswered_and_a_wrong_secret_starts_nothing(phone, emulator):
    emulator.sip.webhook_secret = "whsec_" + base64.b64encode(b"not the gateway's signing key....").decode()
    emulator.sip.answer_timeout = 2.0
    try:
        call_id = ring(emulator, say=["hello"])
        info = wait_until(lambda: (i := phone_call(emulator, call_id))["state"] == "unanswered" and i, 20, 0.1, "end")
        assert info["deliveries"] and set(info["deliveries"]) == {401}  # retried while refused
        assert len(info["deliveries"]) > 1 and info["accept_body"] is None
        assert archive_of(phone).find_session(call_id) is None
    finally:
        emulator.sip.answer_timeout = 10.0
