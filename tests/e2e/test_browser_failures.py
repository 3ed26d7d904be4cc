"""Every failure a person can meet shows a message they can act on (real Chromium, real gateway,
faults injected in the emulator), and the recorder policy when the listener cannot attach."""

from __future__ import annotations

import time

import pytest
import requests

from local.emulator import reply_for
from local.processes import free_port
from tests.e2e.browser_support import ARTIFACTS, WATCH_GATE, StaticSite, assistant_texts, open_page, start_call
from tests.fixtures.browser import CHROMIUM, CHROMIUM_ARGS


def _launch_without(playwright_instance, flag: str):
    args = [a for a in CHROMIUM_ARGS if a != flag]
    return playwright_instance.chromium.launch(executable_path=CHROMIUM, headless=True, args=args)


def click_start_expect_error(page, timeout: float = 20_000) -> str:
    page.click("#start")
    page.wait_for_selector("#error:not([hidden])", timeout=timeout)
    return page.text_content("#error")


def connect_requests(page) -> list[str]:
    seen: list[str] = []
    page.on("request", lambda r: seen.append(r.url) if "/api/connect" in r.url else None)
    return seen


def test_microphone_denied(playwright_instance, gateway_stack):
    # No fake media UI: headless Chromium denies the permission prompt, as a person clicking "Block".
    b = _launch_without(playwright_instance, "--use-fake-ui-for-media-stream")
    try:
        page = open_page(b, gateway_stack.url + "/")
        sent = connect_requests(page)
        message = click_start_expect_error(page)
        assert "Microphone access was denied" in message
        assert page.get_attribute("#state", "data-state") == "failed"
        assert page.is_enabled("#start") and not page.is_enabled("#stop")
        assert sent == []  # nothing reaches the gateway without a microphone
    finally:
        b.close()


def test_microphone_missing(playwright_instance, gateway_stack):
    # No fake capture device: this machine has no real microphone.
    b = _launch_without(playwright_instance, "--use-fake-device-for-media-stream")
    try:
        page = open_page(b, gateway_stack.url + "/")
        inputs = page.evaluate(
            "async () => (await navigator.mediaDevices.enumerateDevices()).filter(d => d.kind === 'audioinput').length"
        )
        if inputs:
            pytest.skip(f"this machine has {inputs} real microphone(s); the missing-microphone case needs none")
        assert "No microphone was found" in click_start_expect_error(page)
    finally:
        b.close()


def test_gateway_unreachable(browser):
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    with StaticSite({"gatewayUrl": dead}) as site:
        page = open_page(browser, site.url + "/")
        message = click_start_expect_error(page)
        assert "voice service cannot be reached" in message
        assert page.get_attribute("#state", "data-state") == "failed"
        # The microphone is released after a failure (the tab's recording indicator goes away).
        assert page.evaluate("window.__pcs.at(-1).getSenders().every(s => !s.track || s.track.readyState === 'ended')")
        page.close()


def test_origin_not_allowed(browser, gateway_stack):
    calls_before = gateway_stack.emulator.stats()["calls"]
    # A second origin the gateway's ALLOWED_ORIGINS does not list.
    with StaticSite({"gatewayUrl": gateway_stack.url}) as site:
        page = open_page(browser, site.url + "/")
        message = click_start_expect_error(page)
        assert "not allowed to use the voice service" in message
        assert site.url in message  # tells the owner exactly which origin to add
        page.close()
    assert gateway_stack.emulator.stats()["calls"] == calls_before


def test_throttled_shows_retry_after(browser, gateway_stack):
    gateway_stack.emulator.set_fault("calls", status=429, retry_after=7)
    page = open_page(browser, gateway_stack.url + "/")
    message = click_start_expect_error(page)
    assert "The voice service is busy. Try again in 7 seconds." in message
    assert "Reference: " in message
    ARTIFACTS.mkdir(exist_ok=True)
    page.set_viewport_size({"width": 375, "height": 740})
    page.screenshot(path=str(ARTIFACTS / "browser-throttled-phone.png"))
    page.close()


def test_service_error(browser, gateway_stack):
    gateway_stack.emulator.set_fault("calls", status=503)
    page = open_page(browser, gateway_stack.url + "/")
    message = click_start_expect_error(page)
    assert "voice service had a problem" in message
    assert page.get_attribute("#state", "data-state") == "failed"
    # Start again after the fault is gone: the page recovers without a reload.
    page.click("#start")
    page.wait_for_selector("#state[data-state=live]", timeout=30_000)
    assert page.is_hidden("#error")
    page.click("#stop")
    page.wait_for_selector("#state[data-state=ended]")
    page.close()


def test_connection_lost(browser, gateway_stack):
    page = open_page(browser, gateway_stack.url + "/")
    call_id = start_call(page)
    # The service side goes away (the peer connection closes under the browser).
    r = requests.post(f"{gateway_stack.emulator.url}/_emulator/calls/{call_id}/end", timeout=10)
    assert r.status_code == 200
    page.wait_for_selector("#error:not([hidden])", timeout=15_000)
    assert "connection was lost" in page.text_content("#error")
    page.wait_for_selector("#state[data-state=ended]")
    assert not page.is_enabled("#message") and page.is_enabled("#start")
    page.close()


@pytest.fixture
def recorder_blocked(gateway_stack_factory):
    """A stack whose listener cannot attach the sideband (every attempt refused), and a page on a
    second origin whose config waits 2 s for the recorder, with the policy the test sets."""
    site = StaticSite()
    stack = gateway_stack_factory(origins=[site.url])
    stack.emulator.set_fault("sideband", status=503, times=0)

    def with_policy(policy: str) -> str:
        site.configure({"gatewayUrl": stack.url, "recorderWaitSeconds": 2, "unrecordedPolicy": policy})
        return site.url + "/"

    with site:
        yield stack, with_policy


def test_unrecorded_policy_continue_shows_notice(browser, recorder_blocked):
    stack, with_policy = recorder_blocked
    page = open_page(browser, with_policy("continue"))
    page.evaluate(WATCH_GATE)
    started = time.monotonic()
    start_call(page)
    assert time.monotonic() - started >= 2.0  # it waited for the recorder first
    assert page.get_attribute("#recorder", "data-recorder") == "unrecorded"
    page.wait_for_selector("#notice:not([hidden])")
    assert "NOT being recorded" in page.text_content("#notice")
    gate = page.evaluate("window.__gate")
    assert any(g["recorder"] == "waiting" and g["inputDisabled"] and g["micEnabled"] is False for g in gate), gate
    # The conversation goes on, unrecorded, as the policy says.
    page.fill("#message", "Are you there?")
    page.click("#send")
    page.wait_for_function(
        "t => [...document.querySelectorAll('#transcript li.assistant[data-done=true] .text')]"
        ".some(e => e.textContent === t)",
        arg=reply_for("Are you there?"),
        timeout=15_000,
    )
    assert reply_for("Are you there?") in assistant_texts(page)
    page.click("#stop")
    page.wait_for_selector("#state[data-state=ended]")
    page.close()


def test_unrecorded_policy_end_hangs_up(browser, recorder_blocked):
    stack, with_policy = recorder_blocked
    page = open_page(browser, with_policy("end"))
    call_ids: list[str] = []
    page.on(
        "response",
        lambda r: (
            call_ids.append(r.headers.get("x-call-id")) if r.url.endswith("/api/connect") and r.status == 201 else None
        ),
    )
    message = click_start_expect_error(page)
    assert "could not be recorded" in message
    assert page.get_attribute("#state", "data-state") == "failed"
    assert not page.is_enabled("#message")
    # The call was hung up through the gateway, not left running unrecorded.
    assert call_ids and call_ids[0]
    info = requests.get(f"{stack.emulator.url}/_emulator/calls/{call_ids[0]}", timeout=5).json()
    assert info["state"] == "ended" and info["end_reason"] == "hangup", info
    page.close()
