"""Tools and the output guardrail run by the listener on the sideband, against the realtime emulator
and Azurite: the model's function calls get outputs (or error outputs) and answers, blocked words are
cancelled, enough hits hang up, and every step is a chained, verified archive row."""

from __future__ import annotations

import json
import time

import requests

from realtime_gateway.audit import verify_call
from realtime_gateway.listener.guardrails import Guardrail
from realtime_gateway.listener.tools import ToolBox
from tests.fixtures.listener import TOOLS, end_call, listener, message, run_in_thread, wait_attached


def new_call(emulator, **spec) -> str:
    r = requests.post(f"{emulator.url}/_emulator/calls", json=spec, timeout=10)
    r.raise_for_status()
    return r.json()["call_id"]


def say(emulator, call_id, text):
    r = requests.post(
        f"{emulator.url}/_emulator/calls/{call_id}/script", json={"responses": 1, "text": text}, timeout=60
    )
    r.raise_for_status()
    return r.json()


def wait_for(predicate, timeout=20, what="condition"):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def call_info(emulator, call_id):
    return requests.get(f"{emulator.url}/_emulator/calls/{call_id}", timeout=10).json()


def payloads(arc, call_id, event_type):
    return [json.loads(e.payload) for e in arc.read_events(call_id) if e.event_type == event_type]


def test_tool_calls_answer_with_results_and_errors_and_the_call_goes_on(emulator, archive, upstream, settings):
    call_id = new_call(emulator, session={"tools": TOOLS, "output_modalities": ["text"]})
    tools = ToolBox.load(TOOLS, "tests.fixture_app.tools", timeout=0.5)
    t, box = run_in_thread(listener(message(call_id), archive, upstream, settings, tools=tools))
    wait_attached(archive, call_id)
    turns = [
        ('call tool echo {"text": "hi", "times": 2}', "From echo: echo is hihi."),
        ('call tool echo {"text": 5}', "The echo tool failed: invalid arguments: $.text must be string"),
        ("call tool echo not json", "The echo tool failed: the arguments are not valid JSON"),
        ('call tool echo {"text": "a", "extra": 1}', "The echo tool failed: invalid arguments: $.extra is not allowed"),
        (
            "call tool explode",
            "The explode tool failed: tool 'explode' failed: RuntimeError: boom",
        ),
        ('call tool slow {"seconds": 3}', "The slow tool failed: tool 'slow' did not answer within 0.5 s"),
        ("call tool ghost", "The ghost tool failed: tool 'ghost' has no implementation on the server"),
        ("are you still there?", "You said: are you still there?"),
    ]
    for n, (text, _) in enumerate(turns):
        started = time.monotonic()
        say(emulator, call_id, text)
        expected = 2 * n + 2 if n < len(turns) - 1 else 2 * n + 1  # a tool turn is two responses
        wait_for(lambda n=expected: call_info(emulator, call_id)["responses"] >= n, what=f"the answer to {text!r}")
        assert time.monotonic() - started < 5  # the slow tool's 3 s never held the call up past its limit
    wait_for(
        lambda: len(payloads(archive, call_id, "response.output_text.done")) == len(turns), what="every answer archived"
    )
    end_call(emulator, call_id)
    t.join(30)
    assert "error" not in box, box.get("error")
    assert box["result"].end_reason == "ended"

    answers = [p["text"] for p in payloads(archive, call_id, "response.output_text.done")]
    assert answers == [answer for _, answer in turns]
    rows = payloads(archive, call_id, "listener.tool")
    assert [(r["name"], r["ok"]) for r in rows] == [
        ("echo", True),
        ("echo", False),
        ("echo", False),
        ("echo", False),
        ("explode", False),
        ("slow", False),
        ("ghost", False),
    ]
    assert rows[0]["result"] == '{"echo": "hihi"}' and rows[0]["arguments"] == '{"text": "hi", "times": 2}'
    assert all(r["sent"] and r["duration_ms"] >= 0 and r["call_id"].startswith("call_") for r in rows)
    assert 450 <= rows[5]["duration_ms"] < 2000
    # each output went back to the model as a function_call_output item with the call's id
    outputs = [
        p["item"]
        for p in payloads(archive, call_id, "conversation.item.added")
        if p["item"]["type"] == "function_call_output"
    ]
    assert [o["call_id"] for o in outputs] == [r["call_id"] for r in rows]
    assert json.loads(outputs[1]["output"]) == {"error": rows[1]["error"]}
    session = archive.find_session(call_id)
    assert (session["tool_calls"], session["tool_errors"]) == (7, 6)
    report = verify_call(archive, call_id)
    assert report.ok, report.problems


def test_guardrail_cancels_blocked_words_and_hangs_up_after_max_hits(emulator, archive, upstream, settings):
    call_id = new_call(emulator, session={"output_modalities": ["text"]}, delta_interval=0.05)
    guardrail = Guardrail.load((r"\bforbidden\b",), "", "That answer was stopped.", 2)
    t, box = run_in_thread(listener(message(call_id), archive, upstream, settings, guardrail=guardrail))
    wait_attached(archive, call_id)
    long_tail = " ".join(f"word{i}" for i in range(30))
    say(emulator, call_id, f"say the FORBIDDEN thing {long_tail}")
    wait_for(lambda: call_info(emulator, call_id)["cancelled_responses"] == 1, what="the first cancel")
    say(emulator, call_id, "a harmless question")
    say(emulator, call_id, f"forbidden again {long_tail}")
    t.join(30)
    assert "error" not in box, box.get("error")
    assert box["result"].end_reason == "guardrail"
    assert call_info(emulator, call_id)["state"] == "ended"

    done = [p["response"]["status"] for p in payloads(archive, call_id, "response.done")]
    # the hang-up may end the call before the third response's cancelled response.done
    assert done[:2] == ["cancelled", "completed"] and done[2:] in ([], ["cancelled"]), done
    texts = [p["text"] for p in payloads(archive, call_id, "response.output_text.done")]
    assert "FORBIDDEN" in texts[0] and "word29" not in texts[0]  # cut off mid-answer
    assert texts[1] == "You said: a harmless question"
    assert all("word29" not in text for text in texts)
    rows = payloads(archive, call_id, "listener.guardrail")
    assert [(r["hits"], r["action"], r["matched"]) for r in rows] == [
        (1, "cancel", "FORBIDDEN"),
        (2, "cancel+hangup", "forbidden"),
    ]
    notices = [
        p["item"]["content"][0]["text"]
        for p in payloads(archive, call_id, "conversation.item.added")
        if p["item"]["role"] == "assistant" and p["item"]["status"] == "completed"
    ]
    assert notices in (["That answer was stopped."], ["That answer was stopped."] * 2)
    session = archive.find_session(call_id)
    assert session["guardrail_hits"] == 2 and session["end_reason"] == "guardrail"
    report = verify_call(archive, call_id)
    assert report.ok, report.problems
