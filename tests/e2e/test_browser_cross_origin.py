"""The page on another origin (a static host with the Static Web Apps headers, CSP included) talks
to the gateway through CORS, configured by config.json or ?gateway=; the module embeds on its own."""

from __future__ import annotations

import pytest
import requests

from local.emulator import reply_for
from tests.e2e.browser_support import StaticSite, open_page, start_call


@pytest.fixture
def second_origin(gateway_stack_factory):
    site = StaticSite()
    stack = gateway_stack_factory(origins=[site.url])
    with site:
        yield site, stack


def _talk_and_hang_up(page, stack, text: str) -> str:
    call_id = start_call(page)
    assert call_id.startswith("rtc_")  # x-call-id was readable cross-origin (exposed header)
    assert page.get_attribute("#recorder", "data-recorder") == "attached"  # GET /api/calls/{id} via CORS
    page.fill("#message", text)
    page.keyboard.press("Enter")
    page.wait_for_function(
        "t => [...document.querySelectorAll('#transcript li.assistant[data-done=true] .text')]"
        ".some(e => e.textContent === t)",
        arg=reply_for(text),
        timeout=15_000,
    )
    page.click("#stop")
    page.wait_for_selector("#state[data-state=ended]")
    info = requests.get(f"{stack.emulator.url}/_emulator/calls/{call_id}", timeout=5).json()
    assert info["state"] == "ended" and info["end_reason"] == "hangup", info
    return call_id


def test_page_on_second_origin_works_through_cors(browser, second_origin):
    site, stack = second_origin
    site.configure({"gatewayUrl": stack.url})  # what the deploy writes
    page = open_page(browser, site.url + "/")
    response_csp = page.evaluate(
        "async () => (await fetch('/', {cache: 'no-store'})).headers.get('content-security-policy')"
    )
    assert "connect-src 'self' " + stack.url in response_csp
    _talk_and_hang_up(page, stack, "Hello from another origin")
    assert page.evaluate("window.__csp") == []  # the CSP allowed everything the page needed
    assert "/config.json" in site.requests
    page.close()


def test_gateway_query_parameter_overrides_config(browser, second_origin):
    site, stack = second_origin
    site.configure({"gatewayUrl": "http://127.0.0.1:9"})  # a wrong configured gateway...
    site.gateway_origin = stack.url  # ...and a CSP that allows the right one
    page = open_page(browser, f"{site.url}/?gateway={stack.url}")
    _talk_and_hang_up(page, stack, "Overridden gateway")
    page.close()


def test_csp_blocks_a_gateway_it_does_not_list(browser, second_origin):
    """Control for the test above: the static host really enforces the CSP."""
    site, stack = second_origin
    site.configure({"gatewayUrl": stack.url})
    site.gateway_origin = None  # deploy forgot to add the gateway to connect-src
    page = open_page(browser, site.url + "/")
    page.click("#start")
    page.wait_for_selector("#error:not([hidden])")
    assert any(v.startswith("connect-src") for v in page.evaluate("window.__csp"))
    assert "cannot be reached" in page.text_content("#error")  # a blocked fetch looks like a dead gateway
    assert page.text_content("#call-id") == "—"
    page.close()


def test_embedded_module_with_the_seed_channel_label(browser, second_origin):
    """Embedding: a page imports realtime-client.js and drives it; the seed's data channel label
    (`realtime-channel`) works as well as the service's (`oai-events`)."""
    site, stack = second_origin
    site.configure({"gatewayUrl": stack.url})
    page = open_page(browser, site.url + "/")
    result = page.evaluate(
        """async (gateway) => {
      const { RealtimeClient } = await import('./realtime-client.js');
      const client = new RealtimeClient({ gateway, channelLabel: 'realtime-channel' });
      const states = [];
      client.addEventListener('state', (e) => states.push(e.detail.state));
      const reply = new Promise((resolve) => client.addEventListener('transcript', (e) => {
        if (e.detail.role === 'assistant' && e.detail.done) resolve(e.detail.text);
      }));
      const callId = await client.connect();
      client.sendText('Embedded hello');
      const text = await reply;
      await client.hangup();
      return { callId, text, states, recorder: client.recorder };
    }""",
        stack.url,
    )
    assert result["text"] == reply_for("Embedded hello")
    assert result["recorder"] == "attached"
    assert result["states"] == ["starting", "connecting", "recorder-check", "live", "ending", "ended"]
    info = requests.get(f"{stack.emulator.url}/_emulator/calls/{result['callId']}", timeout=5).json()
    assert info["channel_label"] == "realtime-channel"
    page.close()
