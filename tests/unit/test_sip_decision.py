"""`POST /api/sip/incoming` in-process, with the limiter, the service, the deliveries table and the
archive as fakes: a bad signature starts nothing, a repeat is acted on once, each limit refuses with
486 and a number list with 603 (archived with its reason), an accepted call goes to the listener with
the server's policy and without the caller's number. The accept body validates against the `openai`
package's CallAcceptParams and the reject body against CallRejectParams."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from openai.types.realtime.call_accept_params import CallAcceptParams
from openai.types.realtime.call_reject_params import CallRejectParams
from pydantic import TypeAdapter

from realtime_gateway import telemetry
from realtime_gateway.core.message import CallMessage
from realtime_gateway.errors import ApiError
from realtime_gateway.gateway import sip
from realtime_gateway.gateway.http import Request, handle
from realtime_gateway.limits.limiter import Refused, Slot
from realtime_gateway.settings import load_settings
from tests.unit.test_sip_webhook import SECRET, body, headers

CALLER = "+15551230000"
SALT = "a-salt-of-16-chars"
ENV = {
    "AZURE_OPENAI_ENDPOINT": "http://127.0.0.1:9",
    "AZURE_OPENAI_DEPLOYMENT": "gpt-realtime",
    "REALTIME_INSTRUCTIONS": "You are the front desk.",
    "SIP_WEBHOOK_SECRET": SECRET,
    "SIP_CALLER_SALT": SALT,
}


class FakeLimiter:
    def __init__(self, refuse: ApiError | None = None) -> None:
        self.refuse, self.admitted, self.released = refuse, [], []
        self.refusals: dict[str, int] = {}

    def admit(self, headers, principal, rid, call=True):
        if self.refuse is not None:
            raise self.refuse
        self.admitted.append(principal)
        return Slot(self, "001.slot")  # type: ignore[arg-type]

    def release(self, slot_id):
        self.released.append(slot_id)


class FakeApi:
    def __init__(self, fail: ApiError | None = None) -> None:
        self.fail = fail
        self.calls: list[tuple[str, str, Any]] = []

    def accept(self, call_id, session, deadline=None):
        assert deadline is not None and deadline - time.monotonic() <= 8.0  # within Azure's 10 s
        self.calls.append(("accept", call_id, dict(session)))
        if self.fail:
            raise self.fail

    def reject(self, call_id, status_code, deadline=None):
        self.calls.append(("reject", call_id, {"status_code": status_code}))


class FakeDeliveries:
    def __init__(self) -> None:
        self.rows: dict[str, dict] = {}

    def claim(self, webhook_id, call_id):
        if webhook_id in self.rows:
            return False
        self.rows[webhook_id] = {"call_id": call_id}
        return True

    def record(self, webhook_id, outcome):
        self.rows[webhook_id]["outcome"] = outcome

    def forget(self, webhook_id):
        self.rows.pop(webhook_id, None)


class FakeArchive:
    def __init__(self) -> None:
        self.rows: dict[str, dict] = {}

    def ensure_tables(self):
        pass

    def open_session(self, call_id, day, fields):
        self.rows.setdefault(call_id, {"PartitionKey": day, **fields})
        return self.rows[call_id]


class Process:
    def __init__(self, env=None, limiter=None, api=None) -> None:
        self.settings = load_settings({**ENV, **(env or {})})
        self.limits = limiter or FakeLimiter()
        self.api = api or FakeApi()
        self.deliveries = FakeDeliveries()
        self.archive = FakeArchive()
        self.clock = time.time


def post(p: Process, raw: bytes, hdrs: dict, queue: list | None = None):
    req = Request("POST", "http://h/api/sip/incoming", {"content-type": "application/json", **hdrs}, raw)
    resp = handle(sip.sip_incoming, lambda: p, req, enqueue=(queue.append if queue is not None else None))
    return resp, json.loads(resp.body or b"{}")


def test_an_accepted_call_goes_to_the_listener_with_the_policy_and_no_number():
    p, queue = Process(), []
    raw = body()
    resp, answer = post(p, raw, headers(raw), queue)
    assert resp.status == 200 and answer == {"status": "accepted", "call_id": "rtc_abc123", "listener": "queued"}
    [(kind, call_id, session)] = p.api.calls
    assert (kind, call_id) == ("accept", "rtc_abc123")
    TypeAdapter(CallAcceptParams).validate_python(session)  # the oracle's shape
    assert session["type"] == "realtime" and session["model"] == "gpt-realtime"
    assert session["instructions"] == "You are the front desk."  # the browser calls' policy
    [text] = queue
    msg = CallMessage.from_json(text)
    assert (msg.channel, msg.called, msg.sip_call_id, msg.slot) == (
        "sip",
        "+15559870000",
        "a84b4c76e66710@pc33.example",
        "001.slot",
    )
    assert msg.caller and msg.caller.startswith("h-") and msg.principal == {"id": msg.caller, "provider": "sip"}
    assert p.limits.admitted == [msg.principal]  # the same limiter as browser calls, keyed by the hash
    row = p.archive.rows["rtc_abc123"]
    assert row["channel"] == "sip" and row["caller"] == msg.caller and row["state"] == "waiting"
    for text in (queue[0], json.dumps(row), resp.body.decode()):
        assert "5551230000" not in text  # the caller's number nowhere


def test_a_phone_policy_file_wins(tmp_path):
    path = tmp_path / "phone.json"
    path.write_text(json.dumps({"instructions": "You answer the phone line.", "tools": []}))
    p = Process({"SIP_SESSION_POLICY_FILE": str(path)})
    raw = body()
    post(p, raw, headers(raw), [])
    session = p.api.calls[0][2]
    TypeAdapter(CallAcceptParams).validate_python(session)
    assert session["instructions"] == "You answer the phone line."


@pytest.mark.parametrize("tamper", ["bad_signature", "stale", "unsigned"])
def test_a_forged_or_stale_webhook_gets_401_and_starts_nothing(tamper):
    p, queue = Process(), []
    raw = body()
    hdrs = headers(raw)
    if tamper == "bad_signature":
        raw = raw.replace(b"rtc_abc123", b"rtc_evil00")
    elif tamper == "stale":
        hdrs = headers(raw, ts=int(time.time()) - 400)
    else:
        hdrs.pop("webhook-signature")
    resp, answer = post(p, raw, hdrs, queue)
    assert resp.status == 401 and answer["error"]["code"] == "webhook_signature_invalid"
    assert p.api.calls == [] and queue == [] and p.deliveries.rows == {} and p.archive.rows == {}
    assert p.limits.admitted == []


def test_a_repeated_delivery_is_acted_on_once():
    p, queue = Process(), []
    raw = body()
    first, _ = post(p, raw, headers(raw, msg_id="wh_same"), queue)
    again, answer = post(p, raw, headers(raw, msg_id="wh_same"), queue)  # re-signed, as a retry is
    assert first.status == again.status == 200 and answer["status"] == "duplicate"
    assert len(p.api.calls) == 1 and len(queue) == 1 and len(p.limits.admitted) == 1
    assert p.deliveries.rows["wh_same"]["outcome"] == "accepted"


def test_a_failed_accept_frees_the_slot_and_lets_a_redelivery_try_again():
    api = FakeApi(fail=ApiError(502, "upstream_error", "boom"))
    p, queue = Process(api=api), []
    raw = body()
    resp, _ = post(p, raw, headers(raw), queue)
    assert resp.status == 502 and queue == [] and p.limits.released == ["001.slot"]
    assert p.deliveries.rows == {}  # forgotten: the service's retry is not a duplicate
    api.fail = None
    resp, answer = post(p, raw, headers(raw), queue)
    assert resp.status == 200 and answer["status"] == "accepted" and len(queue) == 1


@pytest.mark.parametrize(
    "refusal",
    [
        Refused("too_many_active_calls", "100 calls are already running", 10),
        Refused("rate_limited", "more than 10 requests a minute", 10),
        Refused("budget_exhausted", "the app's spending limit is reached", 10),
        ApiError(503, "limits_unavailable", "cannot check"),
    ],
)
def test_each_limit_refuses_with_486_and_is_archived(refusal):
    p, queue = Process(limiter=FakeLimiter(refuse=refusal)), []
    raw = body()
    resp, answer = post(p, raw, headers(raw), queue)
    assert resp.status == 200 and answer["status"] == "rejected" and answer["sip_status"] == 486
    assert answer["reason"] == refusal.code
    [(kind, call_id, sent)] = p.api.calls
    assert (kind, call_id) == ("reject", "rtc_abc123")
    TypeAdapter(CallRejectParams).validate_python(sent)
    assert sent == {"status_code": 486}
    assert queue == []
    row = p.archive.rows["rtc_abc123"]
    assert (row["state"], row["end_reason"], row["refusal"], row["sip_status"], row["channel"]) == (
        "ended",
        "refused",
        refusal.code,
        486,
        "sip",
    )
    assert "5551230000" not in json.dumps(row)


@pytest.mark.parametrize(
    "env,reason",
    [
        ({"SIP_BLOCKED_NUMBERS": "from:+1555123*"}, "number_blocked"),
        ({"SIP_ALLOWED_NUMBERS": "to:+15550000000"}, "number_not_allowed"),
    ],
)
def test_number_lists_decline_with_603_before_the_limiter(env, reason):
    p, queue = Process(env), []
    raw = body()
    resp, answer = post(p, raw, headers(raw), queue)
    assert resp.status == 200 and (answer["sip_status"], answer["reason"]) == (603, reason)
    assert p.api.calls == [("reject", "rtc_abc123", {"status_code": 603})]
    assert p.limits.admitted == [] and queue == []
    assert p.archive.rows["rtc_abc123"]["refusal"] == reason


def test_caller_privacy_mask_and_keep():
    for privacy, expect in (("mask", "+1********00"), ("keep", CALLER)):
        p, queue = Process({"SIP_CALLER_PRIVACY": privacy}), []
        raw = body()
        post(p, raw, headers(raw), queue)
        msg = CallMessage.from_json(queue[0])
        assert msg.caller == expect
        assert msg.principal is not None and msg.principal["id"].startswith("h-")  # limits: always the hash


def test_other_event_types_are_acknowledged_and_ignored_and_sip_off_is_404():
    p = Process()
    raw = json.dumps({"object": "event", "id": "evt_2", "type": "response.completed", "created_at": 1, "data": {}})
    resp, answer = post(p, raw.encode(), headers(raw.encode()))
    assert resp.status == 200 and answer["status"] == "ignored" and p.api.calls == []
    off = Process({"SIP_WEBHOOK_SECRET": ""})
    raw2 = body()
    resp, answer = post(off, raw2, headers(raw2))
    assert resp.status == 404 and answer["error"]["code"] == "sip_disabled"


def test_phone_calls_count_as_started_or_refused_like_browser_calls(otel):
    raw = body()
    post(Process(), raw, headers(raw), [])
    busy = Process(limiter=FakeLimiter(refuse=Refused("rate_limited", "more than 10 requests a minute", 10)))
    post(busy, raw, headers(raw, msg_id="wh_2"), [])
    declined = Process({"SIP_BLOCKED_NUMBERS": CALLER})
    post(declined, raw, headers(raw, msg_id="wh_3"), [])
    assert otel.total(telemetry.CALLS_STARTED, channel="sip") == 1
    assert otel.total(telemetry.CALLS_REFUSED, reason="rate_limited", channel="sip") == 1
    assert otel.total(telemetry.CALLS_REFUSED, channel="sip") == 2
