"""The built-in phone tools through the local host: the phone policy declares `transfer_call` and
`end_call`, SIP_TRANSFER_TARGETS names two targets, and the emulator's scripted caller says
"call tool <name> <arguments>", which makes the emulated model call the tool (local/emulator/replies.py).

- transfer_call to a configured target: `/refer` reaches the emulator with its URI, the call is
  transferred and the session row ends `transferred`; the `listener.tool` row says so.
- `/refer` failing with 500 twice: the call-back fallback reaches the model as the function output,
  the model answers with it, the row says `fallback` with both failed attempts.
- a target that is not configured: an error output, never a refer.
- end_call: the listener hangs up through `/hangup`, the row ends `assistant_hangup`.
"""

from __future__ import annotations

import json

import pytest

from local.testing.host_process import wait_until
from realtime_gateway.archive.store import Archive
from realtime_gateway.audit.verify import verify_call
from realtime_gateway.listener.call_tools import END_CALL, TRANSFER_CALL
from tests.fixtures.phone import SALT, SECRET, archive_of, phone_call, ring


@pytest.fixture
def phone(gateway_stack_factory, emulator):
    stack = gateway_stack_factory(
        SIP_WEBHOOK_SECRET=SECRET,
        SIP_CALLER_SALT=SALT,
        REALTIME_TOOLS=json.dumps([TRANSFER_CALL, END_CALL]),
        SIP_TRANSFER_TARGETS="sales=tel:+15550001111,support=sip:help@example.com",
    )
    emulator.sip.webhook_url, emulator.sip.webhook_secret = stack.url + "/api/sip/incoming", SECRET
    yield stack
    emulator.sip.webhook_url = emulator.sip.webhook_secret = ""


def ended_row(archive: Archive, call_id: str) -> dict:
    return wait_until(
        lambda: (r := archive.find_session(call_id)) and r.get("state") == "ended" and r, 40, 0.2, "the call ended"
    )


def tool_rows(archive: Archive, call_id: str) -> list[dict]:
    return [json.loads(e.payload) for e in archive.read_events(call_id) if e.event_type == "listener.tool"]


def said(emulator, call_id: str) -> list[str]:
    """What the caller said that reached the model."""
    return [i["text"] for i in emulator.conversation(call_id)["items"] if i["role"] == "user"]


def test_transfer_call_refers_the_caller_to_the_configured_target(phone, emulator):
    call_id = ring(emulator, say=['call tool transfer_call {"target": "sales"}', "are you still there"])
    archive = archive_of(phone)
    row = ended_row(archive, call_id)
    info = phone_call(emulator, call_id)
    assert info["refer_targets"] == ["tel:+15550001111"] and info["state"] == "transferred"
    assert row["channel"] == "sip" and row["end_reason"] == "transferred"
    assert row["end_detail"] == "transferred to sales"
    (tool,) = tool_rows(archive, call_id)
    assert (tool["name"], tool["ok"], tool["outcome"], tool["target"]) == (
        "transfer_call",
        True,
        "transferred",
        "sales",
    )
    assert tool["attempts"] == [{"result": "transferred"}]
    assert "are you still there" not in said(emulator, call_id)  # the caller left with the transfer
    assert verify_call(archive, call_id).ok


def test_a_refer_failing_twice_falls_back_to_offering_a_call_back(phone, emulator):
    emulator.set_fault("refer", status=500, times=2)
    call_id = ring(emulator, say=['call tool transfer_call {"target": "+1 555 000 1111"}'])
    archive = archive_of(phone)
    row = ended_row(archive, call_id)
    assert emulator.faults.active() == []  # both faults spent: the first refer and the one more try
    info = phone_call(emulator, call_id)
    assert info["refer_targets"] == [] and info["end_reason"] == "caller_left"
    items = emulator.conversation(call_id)["items"]
    (output,) = [i["text"] for i in items if i["type"] == "function_call_output"]
    assert "did not go through" in output and "call-back" in output
    # the model answered with it (the next response, asked for once the output was in)
    assert any(i["role"] == "assistant" and "transfer_call tool failed" in i["text"] for i in items)
    (tool,) = tool_rows(archive, call_id)
    assert (tool["ok"], tool["error_kind"], tool["outcome"], tool["target"]) == (
        False,
        "transfer_failed",
        "fallback",
        "sales",
    )
    assert [a["result"] for a in tool["attempts"]] == ["failed", "failed"]
    assert all(a["error"] == "upstream_error" and "500" in a["detail"] for a in tool["attempts"])
    assert row["end_reason"] == "caller_hangup" and int(row["tool_errors"]) == 1
    assert verify_call(archive, call_id).ok


def test_a_target_that_is_not_configured_is_never_referred(phone, emulator):
    call_id = ring(emulator, say=['call tool transfer_call {"target": "sip:anyone@elsewhere.example"}'])
    archive = archive_of(phone)
    row = ended_row(archive, call_id)
    assert phone_call(emulator, call_id)["refer_targets"] == [] and row["end_reason"] == "caller_hangup"
    (tool,) = tool_rows(archive, call_id)
    assert (tool["ok"], tool["error_kind"], tool["outcome"]) == (False, "unknown_target", "refused")


def test_end_call_hangs_up_and_the_session_says_the_assistant_ended_it(phone, emulator):
    call_id = ring(emulator, say=["call tool end_call", "one more thing"])
    archive = archive_of(phone)
    row = ended_row(archive, call_id)
    info = phone_call(emulator, call_id)
    assert info["state"] == "ended" and info["end_reason"] == "hangup"  # through the service's /hangup
    assert row["end_reason"] == "assistant_hangup" and row["hangup_requested_at"]
    assert row["end_detail"] == "the assistant ended the call (end_call)"
    (tool,) = tool_rows(archive, call_id)
    assert (tool["name"], tool["ok"], tool["outcome"]) == ("end_call", True, "hangup")
    assert "one more thing" not in said(emulator, call_id)
    assert verify_call(archive, call_id).ok
