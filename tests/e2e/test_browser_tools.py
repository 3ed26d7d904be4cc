"""Server-side tools and the output guardrail as a person on the page meets them (Chromium, the
local host, the emulator, Azurite): a typed request that needs a tool gets an answer that used its
result while the data channel never carries the tool; a blocked word stops the answer and the page
shows the service's notice; the second hit hangs up; the archive holds every step, verified."""

from __future__ import annotations

import json
import re
import time
from datetime import datetime
from zoneinfo import ZoneInfo

import requests
from azure.data.tables import TableServiceClient

from realtime_gateway.archive.store import Archive
from realtime_gateway.audit import verify_call
from tests.e2e.browser_support import assistant_texts, open_page, start_call

CURRENT_TIME = {
    "type": "function",
    "name": "current_time",
    "description": "The current time in an IANA time zone",
    "parameters": {"type": "object", "properties": {"timezone": {"type": "string"}}, "required": ["timezone"]},
}
NOTICE = "That answer was stopped by the service."

# Test-side instrumentation: every message the page's data channel receives, in order.
RECORD_CHANNEL = """
(() => {
  const create = RTCPeerConnection.prototype.createDataChannel;
  window.__channel = [];
  RTCPeerConnection.prototype.createDataChannel = function (...args) {
    const channel = create.apply(this, args);
    channel.addEventListener('message', (e) => window.__channel.push(e.data));
    return channel;
  };
})();
"""
DONE_ASSISTANT = (
    "re => [...document.querySelectorAll('#transcript li.assistant[data-done=true] .text')]"
    ".some(e => new RegExp(re).test(e.textContent))"
)


def test_tool_answer_guardrail_notice_and_hang_up_in_the_browser(browser, gateway_stack_factory):
    stack = gateway_stack_factory(
        TOOLS_MODULE="app_tools",
        REALTIME_TOOLS=json.dumps([CURRENT_TIME]),
        GUARDRAIL_BLOCKED_TERMS="forbidden",
        GUARDRAIL_NOTICE=NOTICE,
        GUARDRAIL_MAX_HITS="2",
    )
    context = browser.new_context()
    context.add_init_script(RECORD_CHANNEL)
    page = open_page(context, stack.url + "/")
    call_id = start_call(page)

    # A typed request that triggers the tool (the emulator's documented trigger) gets an answer using its result.
    page.fill("#message", 'call tool current_time {"timezone": "Europe/Paris"}')
    page.keyboard.press("Enter")
    page.wait_for_function(DONE_ASSISTANT, arg="^From current_time: ", timeout=30_000)
    answer = next(t for t in assistant_texts(page) if t.startswith("From current_time: "))
    m = re.fullmatch(r"From current_time: timezone is Europe/Paris, time is (\d\d:\d\d), date is ([\d-]+)\.", answer)
    assert m, answer
    paris = datetime.now(ZoneInfo("Europe/Paris"))
    shown = datetime.strptime(f"{m.group(2)} {m.group(1)}", "%Y-%m-%d %H:%M").replace(tzinfo=paris.tzinfo)
    assert abs((paris - shown).total_seconds()) < 120, (answer, paris)

    # A blocked word cuts the answer off; the page shows the service's notice as such.
    tail = " ".join(f"word{i}" for i in range(20))
    page.fill("#message", f"something forbidden {tail}")
    page.keyboard.press("Enter")
    page.wait_for_selector("#transcript li.notice[data-done=true]", timeout=30_000)
    assert page.text_content("#transcript li.notice .who") == "Notice"
    assert page.text_content("#transcript li.notice .text") == NOTICE
    page.wait_for_function(DONE_ASSISTANT, arg="^You said: something forbidden", timeout=30_000)
    cut = next(t for t in assistant_texts(page) if t.startswith("You said: something forbidden"))
    assert "word19" not in cut, cut

    # The second hit hangs the call up.
    page.fill("#message", f"forbidden once more {tail}")
    page.keyboard.press("Enter")
    emulator = stack.emulator
    end = time.monotonic() + 30
    info: dict = {}
    while time.monotonic() < end:
        info = requests.get(f"{emulator.url}/_emulator/calls/{call_id}", timeout=5).json()
        if info["state"] == "ended":
            break
        time.sleep(0.2)
    assert info["state"] == "ended" and info["end_reason"] == "hangup", info

    # The data channel never carried the tool: no definition, call, arguments or raw result.
    channel = [json.loads(m) for m in page.evaluate("window.__channel")]
    not_user = json.dumps([m for m in channel if (m.get("item") or {}).get("role") != "user"])
    assert channel and "function_call" not in not_user and "IANA" not in not_user
    assert 'Europe/Paris"' not in not_user and '"timezone"' not in not_user
    context.close()

    # The archive: the tool call, both guardrail actions, the session's counts; the chain verifies.
    archive = Archive(
        TableServiceClient.from_connection_string(stack.azurite.connection_string),
        stack.settings["ARCHIVE_EVENTS_TABLE"],
        stack.settings["ARCHIVE_SESSIONS_TABLE"],
    )
    end = time.monotonic() + 20
    row: dict = {}
    while time.monotonic() < end:
        row = archive.find_session(call_id) or {}
        if row.get("state") == "ended":
            break
        time.sleep(0.25)
    assert row.get("end_reason") == "guardrail", row
    assert (row["tool_calls"], row.get("tool_errors", 0), row["guardrail_hits"]) == (1, 0, 2)
    rows = {e.event_type: [] for e in archive.read_events(call_id)}
    for e in archive.read_events(call_id):
        rows[e.event_type].append(json.loads(e.payload))
    (tool,) = rows["listener.tool"]
    assert (
        tool["ok"] and tool["name"] == "current_time" and json.loads(tool["arguments"]) == {"timezone": "Europe/Paris"}
    )
    assert json.loads(tool["result"])["time"] == m.group(1)
    assert [g["action"] for g in rows["listener.guardrail"]] == ["cancel", "cancel+hangup"]
    assert verify_call(archive, call_id).ok
