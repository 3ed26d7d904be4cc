"""`make run` (python -m local.stack with local.settings.json.example) handles CORS as a deployment
does by default (`platformCors=false`): the app answers its own preflights from ALLOWED_ORIGINS, so
a page on a second origin that the setting lists holds a call through it, raw-SDP POST (the request
that needs a preflight) included. Only when asked (Host.CORS / HOST_CORS) does the host answer
preflights itself, for the origins it was given and no other."""

from __future__ import annotations

import json

import requests

from local.emulator import reply_for
from tests.e2e.browser_support import ROOT, StaticSite, open_page, start_call
from tests.integration.test_host_stack import Stack

PREFLIGHT = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type"}

# The raw-SDP POST a page on another origin makes (Content-Type application/sdp: not a "simple"
# request, so the browser sends a preflight first), with a real offer from the page's browser.
RAW_SDP_POST = """
async (gateway) => {
  const pc = new RTCPeerConnection();
  pc.createDataChannel('oai-events');
  pc.addTransceiver('audio');
  await pc.setLocalDescription(await pc.createOffer());
  const r = await fetch(`${gateway}/api/connect`, {
    method: 'POST', body: pc.localDescription.sdp, headers: { 'Content-Type': 'application/sdp' },
  });
  const answer = await r.text();
  const out = { status: r.status, callId: r.headers.get('x-call-id'), location: r.headers.get('location'),
                capability: r.headers.get('x-call-capability'), answer: answer.slice(0, 3) };
  if (out.callId) {
    await fetch(`${gateway}/api/calls/${out.callId}/hangup`, { method: 'POST', headers: { 'x-call-capability': out.capability } });
  }
  pc.close();
  return out;
}
"""


def test_example_settings_leave_the_host_cors_empty():
    host = json.loads((ROOT / "local.settings.json.example").read_text())["Host"]
    assert host["CORS"] == "" and host["CORSCredentials"] is False


def test_make_run_answers_a_second_origin_as_a_deployment_does(browser, tmp_path):
    with StaticSite() as site:
        stack = Stack(tmp_path, ALLOWED_ORIGINS=site.url, HOST_CORS="")  # as `make run` starts it
        try:
            stack.wait_for("open ")
            gateway = f"http://127.0.0.1:{stack.ports['FUNCTIONS_PORT']}"
            assert stack.wait_for("cors: ").startswith("cors: the app answers preflights itself")

            # The app's own preflight answer: its full header list, whatever the browser asked for.
            r = requests.options(f"{gateway}/api/connect", headers={"Origin": site.url, **PREFLIGHT}, timeout=30)
            assert r.status_code in (200, 204), r.text
            assert r.headers["Access-Control-Allow-Origin"] == site.url
            assert "x-openai-agents-sdk" in r.headers["Access-Control-Allow-Headers"]
            refused = requests.options(
                f"{gateway}/api/connect", headers={"Origin": "http://127.0.0.1:9", **PREFLIGHT}, timeout=30
            )
            assert "Access-Control-Allow-Origin" not in refused.headers

            site.configure({"gatewayUrl": gateway})
            page = open_page(browser, site.url + "/")
            sdp = page.evaluate(RAW_SDP_POST, gateway)
            assert sdp["status"] == 201 and sdp["answer"] == "v=0", sdp
            assert sdp["callId"].startswith("rtc_") and sdp["location"] == f"/api/calls/{sdp['callId']}"

            # The page itself, on the second origin: a whole call through the stack.
            start_call(page)
            page.fill("#message", "Hello from a second origin")
            page.keyboard.press("Enter")
            page.wait_for_function(
                "t => [...document.querySelectorAll('#transcript li.assistant[data-done=true] .text')]"
                ".some(e => e.textContent === t)",
                arg=reply_for("Hello from a second origin"),
                timeout=20_000,
            )
            page.click("#stop")
            page.wait_for_selector("#outcome:not([hidden])")
            page.close()
        finally:
            assert stack.terminate() == 0, "\n".join(stack.lines)


def test_host_cors_when_asked_answers_only_its_own_origins(tmp_path):
    """HOST_CORS (or Host.CORS in local.settings.json) puts the host in front, as App Service CORS
    would: it answers preflights for the origins it lists, and refuses others before the app."""
    other = "http://127.0.0.1:9"
    stack = Stack(tmp_path, ALLOWED_ORIGINS=other, HOST_CORS="http://127.0.0.1:1")
    try:
        stack.wait_for("open ")
        gateway = f"http://127.0.0.1:{stack.ports['FUNCTIONS_PORT']}"
        assert (
            stack.wait_for("cors: ")
            == "cors: the host answers preflights for http://127.0.0.1:1 (Host.CORS), as App Service CORS would"
        )
        r = requests.options(f"{gateway}/api/connect", headers={"Origin": other, **PREFLIGHT}, timeout=30)
        assert r.status_code == 400 and "Access-Control-Allow-Origin" not in r.headers
        r = requests.options(
            f"{gateway}/api/connect", headers={"Origin": "http://127.0.0.1:1", **PREFLIGHT}, timeout=30
        )
        assert r.headers["Access-Control-Allow-Headers"] == "content-type"  # the host's echo, not the app's list
    finally:
        assert stack.terminate() == 0, "\n".join(stack.lines)
