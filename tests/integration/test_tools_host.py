"""Server-side tools and the guardrail hook through the local functions host, against the emulator
and Azurite: tool failures (bad arguments, an exception, a timeout, an unknown tool) reach the model
as error outputs and the call goes on; the example module `app_tools` answers through /api/connect
with results the model's answer uses; a hook that flags a phrase cancels the response and, at the
limit, hangs up. Every step is archived, counted in the session row and verified; every message the
listener sends validates against the official `openai` client event types."""

from __future__ import annotations

import json
import time
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
import requests
from azure.core.exceptions import ResourceExistsError
from azure.storage.queue import QueueClient, TextBase64EncodePolicy
from openai.types.realtime import RealtimeClientEvent
from pydantic import TypeAdapter

from local.emulator.calls import Call
from local.testing.calls import end_and_wait, start_recorded_call
from local.testing.host_process import wait_until
from local.testing.offer import OfferPeer
from realtime_gateway.archive.store import Archive
from realtime_gateway.archive.tables import table_service_from_env
from realtime_gateway.audit import verify_call
from realtime_gateway.core.message import CallMessage
from tests.fixtures.listener import TOOLS as CONTROL_TOOLS
from tests.fixtures.realtime_types import extras

CLIENT_EVENT = TypeAdapter(RealtimeClientEvent)

# echo, explode and slow as the in-process tests declare them, and one the server declares but
# tests/fixture_app/tools.py does not implement
TOOLS = [
    *(t for t in CONTROL_TOOLS if t["name"] in ("echo", "explode", "slow")),
    {"type": "function", "name": "missing", "parameters": {"type": "object"}},
]
# Known to the model only (say a browser added it with session.update): the server never declared it.
GHOST = {"type": "function", "name": "ghost", "parameters": {"type": "object"}}
# The declarations app_tools.py documents.
APP_TOOLS = [
    {
        "type": "function",
        "name": "current_time",
        "description": "The current time in a time zone",
        "parameters": {"type": "object", "properties": {"timezone": {"type": "string"}}, "required": ["timezone"]},
    },
    {
        "type": "function",
        "name": "calls_recorded",
        "description": "How many calls the archive holds for a day",
        "parameters": {
            "type": "object",
            "properties": {"day": {"type": "string", "minLength": 10, "maxLength": 10}},
            "required": ["day"],
        },
    },
]
SESSION_UPDATE = {"type": "realtime", "instructions": "Answer briefly; use the tools."}


# ---- helpers -------------------------------------------------------------------------------------
@pytest.fixture
def client_events(monkeypatch) -> dict[str, list[str]]:
    """Test-side instrumentation of the in-process emulator: every client event a call receives, raw,
    by call id (the emulator keeps only a count). The emulator's own handling still runs."""
    seen: dict[str, list[str]] = {}
    handle = Call.handle_client_event

    def recording(self: Call, raw: str) -> None:
        seen.setdefault(self.call_id, []).append(raw)
        handle(self, raw)

    monkeypatch.setattr(Call, "handle_client_event", recording)
    return seen


def assert_client_events(raws: list[str]) -> list[dict]:
    """Each message validates against the SDK's client event union, declares every field it has and
    survives a round trip unchanged."""
    messages = []
    for raw in raws:
        message = json.loads(raw)
        parsed = CLIENT_EVENT.validate_python(message)
        assert parsed.type == message["type"]
        assert not extras(parsed), f"{message['type']}: undeclared fields {extras(parsed)}"
        assert parsed.model_dump(mode="json", exclude_unset=True) == message
        messages.append(message)
    return messages


def archive_of(stack) -> Archive:
    svc = table_service_from_env({"AzureWebJobsStorage": stack.azurite.connection_string})
    return Archive(svc, stack.settings["ARCHIVE_EVENTS_TABLE"], stack.settings["ARCHIVE_SESSIONS_TABLE"])


def payloads(archive: Archive, call_id: str, event_type: str) -> list[dict]:
    return [json.loads(e.payload) for e in archive.read_events(call_id) if e.event_type == event_type]


def emulator_call(stack, call_id: str) -> dict:
    r = requests.get(f"{stack.emulator.url}/_emulator/calls/{call_id}", timeout=10)
    r.raise_for_status()
    return r.json()


def queued_call(stack, archive: Archive, **spec) -> str:
    """An emulator call (admin route) whose CallMessage goes on the host's listener queue; returns
    once the host's listener has attached."""
    call_id = requests.post(f"{stack.emulator.url}/_emulator/calls", json=spec, timeout=10).json()["call_id"]
    now = time.time()
    msg = CallMessage(
        call_id=call_id,
        started_at=now,
        deadline=now + 600,
        origin=stack.url,
        request_id=f"req-{call_id[-8:]}",
        model="gpt-realtime",
        voice="marin",
    )
    q = QueueClient.from_connection_string(
        stack.azurite.connection_string,
        stack.settings["LISTENER_QUEUE"],
        message_encode_policy=TextBase64EncodePolicy(),
    )
    try:
        q.create_queue()  # the host's poller may not have made it yet
    except ResourceExistsError:
        pass
    q.send_message(msg.to_json())
    wait_until(lambda: (archive.find_session(call_id) or {}).get("state") == "attached", 30, 0.1, "listener attached")
    return call_id


def say(stack, call_id: str, text: str) -> None:
    """A typed user turn; returns once the emulator's first response to it is done."""
    r = requests.post(
        f"{stack.emulator.url}/_emulator/calls/{call_id}/script", json={"responses": 1, "text": text}, timeout=60
    )
    r.raise_for_status()


def answers(archive: Archive, call_id: str, count: int) -> list[str]:
    """The first `count` finished (text) answers in the archive, once there are that many."""
    got = wait_until(
        lambda: (
            len(texts := [p["text"] for p in payloads(archive, call_id, "response.output_text.done")]) >= count
            and texts
        ),
        30,
        0.1,
        f"{count} answers archived",
    )
    return got[:count]


def ended_session(archive: Archive, call_id: str) -> dict:
    return wait_until(
        lambda: (s := archive.find_session(call_id) or {}).get("state") == "ended" and s, 30, 0.1, "call ended"
    )


# ---- tests ---------------------------------------------------------------------------------------
def test_tool_failures_are_error_outputs_and_the_call_goes_on(gateway_stack_factory, client_events):
    stack = gateway_stack_factory(
        TOOLS_MODULE="tests.fixture_app.tools",
        REALTIME_TOOLS=json.dumps(TOOLS),
        TOOL_TIMEOUT_SECONDS="0.5",
        POLICY_ENFORCE="false",  # the call's session declares a tool (ghost) the policy does not: kept for this test
        LISTENER_SESSION_UPDATE=json.dumps(SESSION_UPDATE),
    )
    archive = archive_of(stack)
    call_id = queued_call(stack, archive, session={"tools": [*TOOLS, GHOST], "output_modalities": ["text"]})
    turns = [
        ('call tool echo {"text": "hi", "times": 2}', "From echo: echo is hihi."),
        ('call tool echo {"text": 5}', "The echo tool failed: invalid arguments: $.text must be string"),
        ("call tool explode", "The explode tool failed: tool 'explode' failed: RuntimeError: boom"),
        ('call tool slow {"seconds": 3}', "The slow tool failed: tool 'slow' did not answer within 0.5 s"),
        ("call tool ghost", "The ghost tool failed: unknown tool 'ghost'"),
        ("call tool missing", "The missing tool failed: tool 'missing' has no implementation on the server"),
        ("are you still there?", "You said: are you still there?"),  # the call went on
    ]
    for n, (text, _) in enumerate(turns, start=1):
        say(stack, call_id, text)
        answers(archive, call_id, n)  # the model answered (after the tool's output) before the next turn
    view = emulator_call(stack, call_id)
    assert (view["state"], view["tool_calls"], view["responses"]) == ("live", 6, 13), view
    requests.post(f"{stack.emulator.url}/_emulator/calls/{call_id}/end", timeout=10)
    session = ended_session(archive, call_id)

    assert answers(archive, call_id, len(turns)) == [answer for _, answer in turns]
    rows = payloads(archive, call_id, "listener.tool")
    assert [(r["name"], r["ok"]) for r in rows] == [
        ("echo", True),
        ("echo", False),
        ("explode", False),
        ("slow", False),
        ("ghost", False),
        ("missing", False),
    ]
    assert rows[0]["result"] == '{"echo": "hihi"}' and rows[0]["arguments"] == '{"text": "hi", "times": 2}'
    assert all(r["sent"] and r["call_id"].startswith("call_") and r["duration_ms"] >= 0 for r in rows)
    assert rows[3]["duration_ms"] >= 450  # it waited out its time limit, then gave up
    assert (session["tool_calls"], session["tool_errors"], session["end_reason"]) == (6, 5, "ended"), session
    report = verify_call(archive, call_id)
    assert report.ok, report.problems

    # What the listener sent the model: the policy's update, then per tool its output and a response.create.
    sent = assert_client_events(client_events[call_id])
    assert sent[0] == {"type": "session.update", "session": SESSION_UPDATE}
    outputs = [m["item"] for m in sent if m["type"] == "conversation.item.create"]
    assert [m["type"] for m in sent[1:]] == ["conversation.item.create", "response.create"] * 6
    assert [o["call_id"] for o in outputs] == [r["call_id"] for r in rows]
    assert outputs[0]["output"] == rows[0]["result"]
    assert [json.loads(o["output"]) for o in outputs[1:]] == [{"error": r["error"]} for r in rows[1:]]
    # ... and the model took each one as the output of its call (the emulator's items, archived).
    added = [
        p["item"]
        for p in payloads(archive, call_id, "conversation.item.added")
        if p["item"]["type"] == "function_call_output"
    ]
    assert [(a["call_id"], a["output"]) for a in added] == [(o["call_id"], o["output"]) for o in outputs]
    assert not payloads(archive, call_id, "error")  # the emulator refused nothing the listener sent


def test_example_tools_module_answers_through_connect(gateway_stack_factory, client_events, tmp_path):
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps({"session": {"output_modalities": ["text"]}}))  # text: no audio to wait for
    stack = gateway_stack_factory(
        TOOLS_MODULE="app_tools",
        REALTIME_TOOLS=json.dumps(APP_TOOLS),
        REALTIME_SESSION_POLICY_FILE=str(policy),
    )
    archive = archive_of(stack)
    # One earlier call today, recorded and ended, for the table lookup to find besides this one.
    earlier = start_recorded_call(
        stack.emulator.url, stack.azurite.connection_string, stack.settings["LISTENER_QUEUE"], archive
    )
    end_and_wait(stack.emulator.url, earlier, archive)

    with OfferPeer() as peer:
        resp = requests.post(
            stack.url + "/api/connect",
            data=peer.offer,
            headers={"Content-Type": "application/sdp", "Origin": stack.url},
            timeout=30,
        )
        assert resp.status_code == 201, resp.text
        call_id = resp.headers["x-call-id"]
        peer.accept(resp.text, wait_open=15)
        row = wait_until(
            lambda: (s := archive.find_session(call_id) or {}).get("state") == "attached" and s,
            30,
            0.1,
            "listener attached",
        )
        today = row["created_at"][:10]  # the archive's day (UTC) of this call and the earlier one
        # The tools reached the model through the session policy (the client secret), not the test.
        for n, arguments in enumerate(
            (
                f'calls_recorded {{"day": "{today}"}}',
                'calls_recorded {"day": "2001-01-01"}',
                'current_time {"timezone": "Asia/Tokyo"}',
                'current_time {"timezone": "Mars/Olympus"}',
            ),
            start=1,
        ):
            say(stack, call_id, f"call tool {arguments}")
            said = answers(archive, call_id, n)  # answered before the next turn
        view = emulator_call(stack, call_id)
        requests.post(f"{stack.emulator.url}/_emulator/calls/{call_id}/end", timeout=10)
    session = ended_session(archive, call_id)

    assert view["tool_calls"] == 4, view
    assert said[0] == f"From calls_recorded: day is {today}, calls is 2."
    assert said[1] == "From calls_recorded: day is 2001-01-01, calls is 0."
    tokyo = datetime.now(ZoneInfo("Asia/Tokyo"))
    prefix = "From current_time: timezone is Asia/Tokyo, time is "
    assert said[2].startswith(prefix), said[2]
    hhmm, date = said[2][len(prefix) :].rstrip(".").split(", date is ")
    shown = datetime.strptime(f"{date} {hhmm}", "%Y-%m-%d %H:%M").replace(tzinfo=ZoneInfo("Asia/Tokyo"))
    assert abs((tokyo - shown).total_seconds()) < 300, (said[2], tokyo)
    assert said[3].startswith("The current_time tool failed: tool 'current_time' failed: ZoneInfoNotFoundError")

    rows = payloads(archive, call_id, "listener.tool")
    assert [(r["name"], r["ok"]) for r in rows] == [
        ("calls_recorded", True),
        ("calls_recorded", True),
        ("current_time", True),
        ("current_time", False),
    ]
    assert json.loads(rows[0]["result"]) == {"day": today, "calls": 2}
    assert json.loads(rows[2]["result"])["time"] == hhmm
    assert (session["tool_calls"], session["tool_errors"]) == (4, 1), session
    report = verify_call(archive, call_id)
    assert report.ok, report.problems
    assert not payloads(archive, call_id, "error")
    sent = assert_client_events(client_events[call_id])  # no browser message: the peer sent none
    assert [m["type"] for m in sent] == ["conversation.item.create", "response.create"] * 4


def test_guardrail_hook_cancels_and_hangs_up_at_the_limit(gateway_stack_factory, client_events):
    notice = "That answer was stopped."
    stack = gateway_stack_factory(
        GUARDRAIL_HOOK="tests.fixture_app.tools:flag_secret_plan",
        GUARDRAIL_NOTICE=notice,
        GUARDRAIL_MAX_HITS="2",
        POLICY_ENFORCE="false",  # the listener's own messages are counted: no policy restore among them
    )
    archive = archive_of(stack)
    # Deltas 0.1 s apart: the response is still streaming when the hook's verdict comes back.
    call_id = queued_call(stack, archive, session={"output_modalities": ["text"]}, delta_interval=0.1)
    tail = " ".join(f"word{i}" for i in range(30))
    say(stack, call_id, f"tell me the secret plan {tail}")
    assert emulator_call(stack, call_id)["cancelled_responses"] == 1
    say(stack, call_id, "a harmless question")
    view = emulator_call(stack, call_id)
    assert (view["state"], view["cancelled_responses"]) == ("live", 1), view  # the call went on
    say(stack, call_id, f"the Secret Plan once more {tail}")
    view = wait_until(lambda: (v := emulator_call(stack, call_id))["state"] == "ended" and v, 30, 0.1, "hang-up")
    assert view["end_reason"] == "hangup", view
    session = ended_session(archive, call_id)

    texts = [p["text"] for p in payloads(archive, call_id, "response.output_text.done")]
    assert texts[0].startswith("You said: tell me the secret plan") and "word29" not in texts[0]  # cut off
    assert texts[1] == "You said: a harmless question"
    assert all("word29" not in t for t in texts)
    done = [p["response"]["status"] for p in payloads(archive, call_id, "response.done")]
    # the hang-up may end the call before the third response's cancelled response.done
    assert done[:2] == ["cancelled", "completed"] and done[2:] in ([], ["cancelled"]), done
    rows = payloads(archive, call_id, "listener.guardrail")
    assert [(r["hits"], r["action"], r["rule"], r["matched"]) for r in rows] == [
        (1, "cancel", "hook: mentions the secret plan", None),
        (2, "cancel+hangup", "hook: mentions the secret plan", None),
    ]
    assert all(r["sent"] and r["notice"] == notice for r in rows)
    assert (session["guardrail_hits"], session["end_reason"]) == (2, "guardrail"), session
    report = verify_call(archive, call_id)
    assert report.ok, report.problems

    assert not payloads(archive, call_id, "error")  # each cancel reached a response still streaming
    sent = assert_client_events(client_events[call_id])
    assert [m["type"] for m in sent] == ["response.cancel", "output_audio_buffer.clear", "conversation.item.create"] * 2
    assert [m["response_id"] for m in sent if m["type"] == "response.cancel"] == [r["response_id"] for r in rows]
    assert sent[2]["item"] == {
        "type": "message",
        "role": "assistant",
        "content": [{"type": "output_text", "text": notice}],
    }
