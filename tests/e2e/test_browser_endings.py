"""The page says in plain words why a call ended, from the gateway's `end_reason` (real Chromium,
the local host, the emulator, Azurite): its time limit (MAX_CALL_SECONDS, and the service's own
session cap), the day's budget (with the reset time in the person's own time zone), the output
guardrail, the person's own hang-up and a lost connection. The call timer counts down from
`x-call-expires-at`; axe-core finds no violation on the page once it has ended.
(The policy ending is tests/e2e/test_browser_policy.py.)"""

from __future__ import annotations

import time

import requests

from local.emulator import reply_for
from tests.e2e.browser_support import axe_violations, open_page, start_call


def gateway_end_reason(stack, call_id: str, timeout: float = 20.0) -> str:
    """`end_reason` of GET /api/calls/{id} once the call is ended there."""
    end = time.monotonic() + timeout
    body: dict = {}
    while time.monotonic() < end:
        body = requests.get(f"{stack.url}/api/calls/{call_id}", timeout=5).json()
        if body.get("state") == "ended":
            return body.get("end_reason", "")
        time.sleep(0.2)
    raise AssertionError(f"call {call_id} never ended at the gateway: {body}")


def ending_words(page, reason: str, timeout: float = 30_000) -> str:
    """Wait until the page has said why the call ended (`reason`), and return what it said."""
    page.wait_for_selector(f"body[data-end-reason={reason}]", timeout=timeout)
    page.wait_for_selector("#state[data-state=ended]")
    assert page.is_enabled("#start") and not page.is_enabled("#message")
    assert page.text_content("#time-left") == "—"  # the timer stops with the call
    return page.text_content("#error") if page.is_visible("#error") else page.text_content("#outcome")


def test_time_limit_with_a_counting_down_timer(browser, gateway_stack_factory):
    stack = gateway_stack_factory(MAX_CALL_SECONDS=10)
    page = open_page(browser, stack.url + "/")
    call_id = start_call(page)
    first = int(page.get_attribute("#time-left", "data-seconds"))
    assert 0 < first <= 10, first
    assert page.text_content("#time-left") == f"0:{first:02d}"
    page.wait_for_function("n => Number(document.getElementById('time-left').dataset.seconds) < n", arg=first)
    # a timer, not a live region: screen readers read it when asked, not every second
    assert (
        page.get_attribute("#time-left", "role") == "timer" and page.get_attribute("#time-left", "aria-live") == "off"
    )
    words = ending_words(page, "limit")
    assert "The conversation reached its time limit and has ended." in words
    assert page.is_visible("#error") and page.get_attribute("#error", "role") == "alert"
    assert gateway_end_reason(stack, call_id) == "limit"
    assert axe_violations(page) == []
    page.close()


def test_the_last_minute_is_announced_once(browser, gateway_stack_factory):
    stack = gateway_stack_factory(MAX_CALL_SECONDS=66)
    page = open_page(browser, stack.url + "/")
    start_call(page)
    if int(page.get_attribute("#time-left", "data-seconds")) > 61:  # (a slow start may be past it already)
        assert page.is_hidden("#notice")  # more than a minute left: nothing to say yet
    page.wait_for_selector("#notice:not([hidden])", timeout=30_000)
    assert page.text_content("#notice") == "One minute left in this call."
    assert page.get_attribute("#notice", "role") == "status"
    assert int(page.get_attribute("#time-left", "data-seconds")) <= 60
    page.click("#stop")
    page.wait_for_selector("#state[data-state=ended]")
    page.close()


def test_service_session_cap(browser, gateway_stack):
    """The service ends a session at its own cap (an `error` session_expired, then the sideband closes
    with 1001): the gateway records `limit`, and the page says the time limit was reached."""
    page = open_page(browser, gateway_stack.url + "/")
    call_id = start_call(page)
    r = requests.post(
        f"{gateway_stack.emulator.url}/_emulator/calls/{call_id}/expiry", json={"session_max_seconds": 1}, timeout=10
    )
    assert r.status_code == 200, r.text
    words = ending_words(page, "limit")
    assert "The conversation reached its time limit and has ended." in words
    assert gateway_end_reason(gateway_stack, call_id) == "limit"
    page.close()


def test_budget_spent_says_when_calls_open_again_in_local_time(browser, gateway_stack_factory):
    """A running call is hung up once the day's token budget is spent (BUDGET_HANGUP_RUNNING), and
    the next Start is refused until midnight UTC: 05:30 for a person in India (UTC+05:30)."""
    stack = gateway_stack_factory(DAILY_TOKEN_BUDGET=1, BUDGET_HANGUP_RUNNING="true")
    context = browser.new_context(timezone_id="Asia/Kolkata", locale="en-US")
    page = open_page(context, stack.url + "/")
    call_id = start_call(page)
    page.fill("#message", "How much does this cost?")
    page.keyboard.press("Enter")  # the answer's usage spends the one-token budget
    words = ending_words(page, "budget")
    assert "The call was ended because today's allowance for voice calls is used up." in words
    assert "Calls open again " in words and " 5:30 AM (midnight UTC)." in words, words
    assert gateway_end_reason(stack, call_id) == "budget"

    page.click("#start")  # refused now: 429 budget_exhausted, Retry-After until midnight UTC
    page.wait_for_selector("#state[data-state=failed]", timeout=20_000)
    refused = page.text_content("#error")
    assert "Today's allowance for voice calls is used up. Calls open again " in refused
    assert " 5:30 AM (midnight UTC)." in refused and "Reference: " in refused, refused
    assert axe_violations(page) == []
    context.close()


def test_guardrail_hang_up(browser, gateway_stack_factory):
    said = "tell me something forbidden"
    stack = gateway_stack_factory(GUARDRAIL_BLOCKED_TERMS="forbidden", GUARDRAIL_MAX_HITS=1)
    assert "forbidden" in reply_for(said)  # the emulator's deterministic answer carries the blocked term
    page = open_page(browser, stack.url + "/")
    call_id = start_call(page)
    page.fill("#message", said)
    page.keyboard.press("Enter")
    words = ending_words(page, "guardrail")
    assert "The call was ended because the assistant's answers broke this service's content rules." in words
    assert gateway_end_reason(stack, call_id) == "guardrail"
    page.close()


def test_own_hang_up_is_a_status_not_an_alert(browser, gateway_stack):
    page = open_page(browser, gateway_stack.url + "/")
    call_id = start_call(page)
    page.click("#stop")
    words = ending_words(page, "hangup")
    assert words == "You hung up. Press Start to begin a new conversation."
    assert page.get_attribute("#outcome", "role") == "status" and page.is_hidden("#error")
    assert gateway_end_reason(gateway_stack, call_id) == "hangup"
    # A new call clears the last one's words.
    page.click("#start")
    page.wait_for_selector("#state[data-state=live]", timeout=30_000)
    assert page.is_hidden("#outcome") and page.get_attribute("body", "data-end-reason") is None
    page.click("#stop")
    page.wait_for_selector("#state[data-state=ended]")
    page.close()


def test_lost_connection(browser, gateway_stack):
    """The browser's own peer connection goes away (as when the network drops): the gateway knows of
    no reason, so the page says the connection was lost, and tells the gateway to hang up."""
    page = open_page(browser, gateway_stack.url + "/")
    call_id = start_call(page)
    page.evaluate("window.__pcs.at(-1).close()")
    words = ending_words(page, "lost")
    assert "The connection was lost and the call has ended." in words
    assert page.evaluate("window.__pcs.at(-1).getSenders().every(s => !s.track || s.track.readyState === 'ended')")
    assert gateway_end_reason(gateway_stack, call_id) in ("hangup", "ended")
    page.close()
