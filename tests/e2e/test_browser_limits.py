"""The page tells a person plainly which limit refused their call (real Chromium, real gateway)."""

from __future__ import annotations

import requests

from tests.e2e.browser_support import open_page
from tests.fixtures.limits import clear_of_minute_edge


def test_rate_limited_call_says_so(browser, gateway_stack_factory):
    stack = gateway_stack_factory(
        RATE_LIMIT_PER_MINUTE=1, TOKEN_ROUTE_ENABLED="true", **{"AzureWebJobs.call_listener.Disabled": "true"}
    )
    calls_before = stack.emulator.stats()["calls"]
    clear_of_minute_edge()  # the token and the page's connect in one rate window
    assert requests.get(stack.url + "/api/token", timeout=10).status_code == 200  # this client's one a minute
    page = open_page(browser, stack.url + "/")
    page.click("#start")
    page.wait_for_selector("#error:not([hidden])", timeout=20_000)
    message = page.text_content("#error")
    assert "You have started too many calls in a short time. Try again in " in message
    assert "Reference: " in message and page.get_attribute("#state", "data-state") == "failed"
    assert stack.emulator.stats()["calls"] == calls_before
    page.close()
