"""The listener through the local functions host: queue trigger, hand-over binding, poison, status route."""

from __future__ import annotations

import base64
import statistics
import time

import requests
from azure.storage.queue import QueueClient, TextBase64EncodePolicy

from realtime_gateway.archive.store import Archive
from realtime_gateway.archive.tables import table_service_from_env
from realtime_gateway.audit import verify_call
from realtime_gateway.core.message import CallMessage
from realtime_gateway.gateway.routes import capability_hash


def _queue(stack, suffix=""):
    q = QueueClient.from_connection_string(
        stack.azurite.connection_string,
        stack.settings["LISTENER_QUEUE"] + suffix,
        message_encode_policy=TextBase64EncodePolicy(),
    )
    try:
        q.create_queue()
    except Exception:
        pass
    return q


def _archive(stack) -> Archive:
    svc = table_service_from_env({"AzureWebJobsStorage": stack.azurite.connection_string})
    return Archive(svc, stack.settings["ARCHIVE_EVENTS_TABLE"], stack.settings["ARCHIVE_SESSIONS_TABLE"])


def _status(stack, call_id):
    r = requests.get(f"{stack.url}/api/calls/{call_id}", timeout=10)
    assert r.status_code == 200, r.text
    return r.json()


def _wait(pred, timeout=20.0, what="condition"):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        got = pred()
        if got:
            return got
        time.sleep(0.05)
    raise AssertionError(f"{what} not met within {timeout} s")


def _call(stack) -> str:
    return requests.post(f"{stack.emulator.url}/_emulator/calls", timeout=10).json()["call_id"]


CAPABILITY = "capability-of-the-host-test"


def _send(stack, call_id, max_seconds=600) -> CallMessage:
    now = time.time()
    msg = CallMessage(
        call_id=call_id,
        started_at=now,
        deadline=now + max_seconds,
        origin=stack.url,
        request_id="req-host-test",
        capability_sha256=capability_hash(CAPABILITY),
        model="gpt-realtime",
        voice="marin",
    )
    _queue(stack).send_message(msg.to_json())
    return msg


def test_queue_trigger_records_a_call_and_hands_over(gateway_stack_factory):
    stack = gateway_stack_factory(LISTENER_TIME_BOX_SECONDS=10)
    call_id = _call(stack)
    assert _status(stack, call_id)["state"] == "waiting"
    _send(stack, call_id)
    _wait(lambda: _status(stack, call_id)["state"] == "attached", what="attached")
    requests.post(f"{stack.emulator.url}/_emulator/calls/{call_id}/script", json={"responses": 3}, timeout=60)
    archive = _archive(stack)
    # the 10 s time box runs out: the continuation comes back through the output binding
    _wait(
        lambda: (
            (archive.find_session(call_id) or {}).get("continuations") == 1
            and (archive.find_session(call_id) or {}).get("attached_at", "")
            > (archive.find_session(call_id) or {}).get("handed_over_at", "~")
        ),
        timeout=30,
        what="hand-over",
    )
    requests.post(f"{stack.emulator.url}/_emulator/calls/{call_id}/script", json={"responses": 2}, timeout=60)
    requests.post(f"{stack.emulator.url}/_emulator/calls/{call_id}/end", timeout=10)
    _wait(lambda: _status(stack, call_id)["state"] == "ended", what="ended")
    status = _status(stack, call_id)
    assert status["end_reason"] == "ended" and status["recorded"] is True
    events = list(archive.read_events(call_id))
    types = [e.event_type for e in events]
    from datetime import datetime

    at = {e.event_type: datetime.fromisoformat(e.received_at) for e in events if e.source == "listener"}
    print(
        f"\nhand-over through the queue: not recording for "
        f"{(at['listener.gap'] - at['listener.handover']).total_seconds() * 1000:.0f} ms"
    )
    assert types.count("response.done") == 5 and types.count("listener.handover") == 1
    assert verify_call(archive, call_id).ok


def test_malformed_message_goes_to_poison_once(gateway_stack):
    _queue(gateway_stack).send_message('{"v": 1, "call_id": "a/b"}')
    poison = _queue(gateway_stack, "-poison")
    got = _wait(lambda: list(poison.receive_messages(max_messages=5)), what="poison message")
    assert base64.b64decode(got[0].content).decode() == '{"v": 1, "call_id": "a/b"}'
    assert gateway_stack.logs.count("rejected malformed call message") == 1


def test_a_hang_up_through_the_gateway_is_archived_as_hangup(gateway_stack):
    # the service closes with 1001 both at its session limit and after a hang-up: the route's mark tells
    stack = gateway_stack
    call_id = _call(stack)
    _send(stack, call_id)
    _wait(lambda: _status(stack, call_id)["state"] == "attached", what="attached")
    headers = {"Origin": stack.url, "x-call-capability": CAPABILITY}
    r = requests.post(f"{stack.url}/api/calls/{call_id}/hangup", headers=headers, timeout=10)
    assert r.status_code == 200
    archive = _archive(stack)
    session = _wait(lambda: (s := archive.find_session(call_id) or {}).get("state") == "ended" and s, what="ended")
    assert session["end_reason"] == "hangup" and session["close_code"] == 1001 and session["page_hangup_at"]
    assert verify_call(archive, call_id).ok


def test_status_route_rejects_bad_ids_and_foreign_origins(gateway_stack):
    assert requests.get(f"{gateway_stack.url}/api/calls/bad%23id", timeout=10).status_code == 400
    r = requests.get(f"{gateway_stack.url}/api/calls/rtc_x", headers={"Origin": "https://evil.example"}, timeout=10)
    assert r.status_code == 403
    r = requests.get(f"{gateway_stack.url}/api/calls/rtc_x", headers={"Origin": gateway_stack.url}, timeout=10)
    assert r.headers["Access-Control-Allow-Origin"] == gateway_stack.url and r.json()["state"] == "waiting"


def test_attach_delay_over_20_calls_through_the_queue(gateway_stack):
    archive = _archive(gateway_stack)
    delays = []
    for _ in range(20):
        call_id = _call(gateway_stack)
        _send(gateway_stack, call_id)
        row = _wait(
            lambda c=call_id: (
                (archive.find_session(c) or {}).get("attach_delay_ms") is not None and archive.find_session(c)
            ),
            what="attached",
        )
        delays.append(row["attach_delay_ms"])
        requests.post(f"{gateway_stack.emulator.url}/_emulator/calls/{call_id}/end", timeout=10)
        time.sleep(0.3)  # let the host's poll back off a little, as between real calls
    print(
        f"\nattach delay through the queue over 20 calls: median {statistics.median(delays):.0f} ms, "
        f"worst {max(delays):.0f} ms, all {sorted(delays)}"
    )
    assert max(delays) < 5000
