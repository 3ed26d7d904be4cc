"""A person's session in Chromium against the local stack (host + emulator + Azurite): speech in,
a streamed transcript and audio out, a typed message, the recorder gate, hang-up and the archive."""

from __future__ import annotations

import json
import re
import statistics
import time

import pytest
import requests
from azure.data.tables import TableServiceClient

from local.emulator import reply_for
from local.emulator.replies import SPEECH_TRANSCRIPT
from realtime_gateway.archive.store import Archive
from tests.e2e.browser_support import (
    ARTIFACTS,
    INBOUND_AUDIO_BYTES,
    MARKS,
    REMOTE_AUDIO_PEAK,
    WATCH_GATE,
    WATCH_STREAM,
    assistant_texts,
    open_page,
    speech_wav,
    start_call,
    user_texts,
)
from tests.fixtures.browser import launch_chromium

CALL_ID = re.compile(r"^[A-Za-z0-9_.-]+$")


@pytest.fixture(scope="module")
def speaking_browser(playwright_instance, tmp_path_factory):
    """Chromium whose fake microphone says a sentence, pauses, and says it again (looping), so
    the utterance is heard whenever the recorder gate opens."""
    wav = speech_wav(tmp_path_factory.mktemp("speech"))
    b = launch_chromium(playwright_instance, [f"--use-file-for-fake-audio-capture={wav}"])
    yield b
    b.close()


def session_row(stack, call_id: str, want_state: str, timeout: float = 20.0) -> dict:
    """The listener's session row for the call, once it reaches `want_state`."""
    service = TableServiceClient.from_connection_string(stack.azurite.connection_string)
    archive = Archive(service, stack.settings["ARCHIVE_EVENTS_TABLE"], stack.settings["ARCHIVE_SESSIONS_TABLE"])
    end = time.monotonic() + timeout
    row = None
    while time.monotonic() < end:
        try:
            row = archive.find_session(call_id)
        except Exception:  # the table may not exist until the listener's first write
            row = None
        if row and row.get("state") == want_state:
            return row
        time.sleep(0.25)
    raise AssertionError(f"session row for {call_id} never reached {want_state!r}: {row}")


def gateway_call_state(stack, call_id: str, want: str, timeout: float = 20.0) -> dict:
    end = time.monotonic() + timeout
    body = None
    while time.monotonic() < end:
        r = requests.get(f"{stack.url}/api/calls/{call_id}", timeout=5)
        if r.status_code == 200:
            body = r.json()
            if body.get("state") == want:
                return body
        time.sleep(0.25)
    raise AssertionError(f"GET /api/calls/{call_id} never reported {want!r}: {body}")


def test_spoken_session_streams_reply_plays_audio_and_is_archived(speaking_browser, gateway_stack):
    context = speaking_browser.new_context(viewport={"width": 1000, "height": 800})
    page = open_page(context, gateway_stack.url + "/")
    page.evaluate(WATCH_GATE)
    page.evaluate(WATCH_STREAM)

    call_id = start_call(page)
    assert CALL_ID.match(call_id), call_id
    assert page.get_attribute("#state", "data-channel") == "open"
    assert page.get_attribute("#recorder", "data-recorder") == "attached"
    assert page.is_enabled("#message")

    # The fake microphone's utterance: the user turn from input transcription, then the reply.
    expected = reply_for(SPEECH_TRANSCRIPT)
    page.wait_for_function(
        "t => [...document.querySelectorAll('#transcript li.assistant[data-done=true] .text')]"
        ".some(e => e.textContent === t)",
        arg=expected,
        timeout=30_000,
    )
    assert SPEECH_TRANSCRIPT in user_texts(page)
    user_first = page.evaluate("[...document.querySelectorAll('#transcript li')].map(li => li.dataset.role)")
    assert user_first[0] == "user", user_first

    # Streamed: the turn showed partial text (busy) before the whole reply.
    stream = page.evaluate("window.__stream")
    partials = [s["text"] for s in stream if s["busy"] == "true" and s["text"] not in ("", "…")]
    assert len(set(partials)) >= 2, stream
    assert all(expected.startswith(p) for p in partials if len(p) <= len(expected)), partials

    # Remote audio arrives: inbound RTP bytes grow, and the track carries sound (not silence).
    before = page.evaluate(INBOUND_AUDIO_BYTES)
    peak = page.evaluate(REMOTE_AUDIO_PEAK, 6000)  # the looping utterance gets replied to again
    after = page.evaluate(INBOUND_AUDIO_BYTES)
    assert after > before > 0, (before, after)
    assert peak > 0.02, peak

    # Gate held: while the recorder was not attached, mic track off and the text box closed.
    gate = page.evaluate("window.__gate")
    waiting = [g for g in gate if g["recorder"] != "attached"]
    assert waiting and all(g["inputDisabled"] and g["micEnabled"] in (False, None) for g in waiting), gate
    assert any(g["recorder"] == "attached" and g["micEnabled"] for g in gate), gate

    # Screenshots mid-conversation: desktop and phone width.
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "browser-conversation.png"), full_page=True)
    page.set_viewport_size({"width": 375, "height": 740})
    page.screenshot(path=str(ARTIFACTS / "browser-conversation-phone.png"), full_page=True)
    assert page.evaluate("document.documentElement.scrollWidth") <= 375  # no sideways scrolling

    marks = page.evaluate(MARKS)
    page.click("#stop")
    page.wait_for_selector("#state[data-state=ended]")
    assert not page.is_enabled("#message")

    # The hang-up reached the service and the listener archived the session as ended.
    emu_call = requests.get(f"{gateway_stack.emulator.url}/_emulator/calls/{call_id}", timeout=5).json()
    assert emu_call["state"] == "ended"
    assert emu_call["channel_label"] == "oai-events"
    row = session_row(gateway_stack, call_id, "ended")
    assert row.get("attached_at")
    gateway_call_state(gateway_stack, call_id, "ended")
    (ARTIFACTS / "browser-spoken-marks.json").write_text(json.dumps(marks, indent=2))
    context.close()


def test_typed_message_gets_the_reply(browser, gateway_stack):
    page = open_page(browser, gateway_stack.url + "/")
    start_call(page)
    assert page.get_attribute("#recorder", "data-recorder") == "attached"
    page.fill("#message", "What are my vacation options?")
    page.keyboard.press("Enter")  # keyboard works: Enter submits the form
    expected = reply_for("What are my vacation options?")
    page.wait_for_function(
        "t => [...document.querySelectorAll('#transcript li.assistant[data-done=true] .text')]"
        ".some(e => e.textContent === t)",
        arg=expected,
        timeout=15_000,
    )
    assert user_texts(page) == ["What are my vacation options?"]
    assert page.input_value("#message") == ""
    assert expected in assistant_texts(page)

    # Mute is a toggle button that screen readers announce as pressed.
    page.click("#mute")
    assert page.get_attribute("#mute", "aria-pressed") == "true"
    assert page.evaluate("window.__pcs.at(-1).getSenders()[0].track.enabled") is False
    page.click("#mute")
    assert page.evaluate("window.__pcs.at(-1).getSenders()[0].track.enabled") is True

    page.click("#stop")
    page.wait_for_selector("#state[data-state=ended]")
    page.close()


def test_click_to_data_channel_and_first_transcript_timings(browser, gateway_stack):
    """Measured in the browser (performance marks), median over five calls; written to artifacts/."""
    runs = []
    for n in range(5):
        page = open_page(browser, gateway_stack.url + "/")
        page.click("#start")
        page.wait_for_selector("#message:enabled", timeout=30_000)
        page.fill("#message", f"Timing run {n}")
        page.keyboard.press("Enter")
        page.wait_for_selector("#transcript li.assistant .text:not(:empty)", timeout=15_000)
        page.wait_for_function("() => performance.getEntriesByName('realtime:first-transcript').length > 0")
        m = page.evaluate(MARKS)
        runs.append(
            {
                "click_to_datachannel_ms": m["datachannel-open"] - m["click"],
                "click_to_answer_ms": m["answer"] - m["click"],
                "click_to_recorder_attached_ms": m["recorder-attached"] - m["click"],
                "click_to_first_transcript_ms": m["first-transcript"] - m["click"],
                "sent_to_first_transcript_ms": m["first-transcript"] - m["text-sent"],
            }
        )
        page.click("#stop")
        page.wait_for_selector("#state[data-state=ended]")
        page.close()
    medians = {k: round(statistics.median(r[k] for r in runs)) for k in runs[0]}
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "browser-timings.json").write_text(json.dumps({"median": medians, "runs": runs}, indent=2))
    print("browser timings (median of 5):", medians)
    assert medians["click_to_datachannel_ms"] < 5000
    assert medians["click_to_first_transcript_ms"] < 20000


def test_keyboard_only_and_leaving_the_page_ends_the_call(browser, gateway_stack):
    page = open_page(browser, gateway_stack.url + "/")
    # Every control has an accessible name; the transcript is a live region.
    page.get_by_role("button", name="Start").wait_for()
    page.get_by_role("button", name="Hang up").wait_for()
    page.get_by_role("button", name="Mute").wait_for()
    page.get_by_label("Type a message").wait_for()
    page.get_by_role("meter", name="Microphone level").wait_for()
    assert page.get_attribute("#transcript", "aria-live") == "polite"
    assert page.get_attribute("#error", "role") == "alert"

    # Tab to Start (past the skip link) and press Enter; the message box is then reachable.
    page.keyboard.press("Tab")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "start"
    page.keyboard.press("Enter")
    page.wait_for_selector("#state[data-state=live]", timeout=30_000)
    call_id = page.text_content("#call-id").strip()
    page.focus("#message")
    page.keyboard.type("Typed with the keyboard")
    page.keyboard.press("Enter")
    page.wait_for_function(
        "t => [...document.querySelectorAll('#transcript li.assistant[data-done=true] .text')]"
        ".some(e => e.textContent === t)",
        arg=reply_for("Typed with the keyboard"),
    )

    # Closing the tab mid-call hangs up through the gateway (keepalive POST on pagehide).
    page.close(run_before_unload=True)
    end = time.monotonic() + 10
    info = {}
    while time.monotonic() < end:
        info = requests.get(f"{gateway_stack.emulator.url}/_emulator/calls/{call_id}", timeout=5).json()
        if info["state"] == "ended":
            break
        time.sleep(0.2)
    assert info["state"] == "ended" and info["end_reason"] == "hangup", info
