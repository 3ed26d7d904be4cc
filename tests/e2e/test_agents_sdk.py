"""The OpenAI Agents SDK's WebRTC transport (`@openai/agents-realtime`, bundled from npm with
esbuild) through the gateway, from another origin listed in ALLOWED_ORIGINS, in Chromium with a
speaking fake microphone: it connects (its preflight asks for `authorization` and
`x-openai-agents-sdk`; it reads the call id from `Location`), and a spoken turn comes back as
audio and a transcript.

Under the default `webrtcfilter` it pays what static_web/README.md says: connect() waits ~5 s for
a `session.updated` that never comes, and a second `response.create` stays queued behind a
`response.done` the filter drops. Under the documented full-feature configuration
(WEBRTC_FILTER=false, the listener's POLICY_ENFORCE holding the policy) neither happens, and the
SDK's own `session.update` (an agent with other instructions) still does not change the policy."""

from __future__ import annotations

import subprocess
import time

import pytest
import requests

from local.emulator import reply_for
from local.emulator.replies import SPEECH_TRANSCRIPT
from tests.e2e.browser_support import REMOTE_AUDIO_PEAK, ROOT, StaticSite, open_page, speech_wav
from tests.fixtures.browser import launch_chromium

ESBUILD = ROOT / "node_modules" / ".bin" / "esbuild"
ENTRY = ROOT / "tests" / "e2e" / "fixtures" / "agents_sdk_page.js"
PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Agents SDK through the gateway</title>
<script type="module" src="/sdk-page.js"></script></head>
<body><h1>Agents SDK</h1><audio id="voice"></audio></body></html>
"""
PIRATE = "Talk like a pirate."
POLICY = "You are the shop's assistant; answer briefly."  # the server's policy (REALTIME_INSTRUCTIONS)


@pytest.fixture(scope="module")
def sdk_bundle(tmp_path_factory) -> bytes:
    """The page script with the SDK bundled in, as a site owner's build would make it."""
    assert ESBUILD.exists(), "esbuild is missing: `npm ci` installs it"
    out = tmp_path_factory.mktemp("sdk") / "sdk-page.js"
    subprocess.run(
        [str(ESBUILD), str(ENTRY), "--bundle", "--format=esm", "--platform=browser", "--target=es2022",
         f"--outfile={out}", "--log-level=warning"],
        cwd=ROOT, check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    return out.read_bytes()


@pytest.fixture(scope="module")
def speaking_browser(playwright_instance, tmp_path_factory):
    """Chromium whose fake microphone says a sentence, pauses, and says it again (looping)."""
    wav = speech_wav(tmp_path_factory.mktemp("speech"))
    b = launch_chromium(playwright_instance, [f"--use-file-for-fake-audio-capture={wav}"])
    yield b
    b.close()


def sdk_page(browser, gateway_stack_factory, sdk_bundle, **settings):
    """A second origin (the Static Web Apps headers, CSP included) serving the SDK page, and a
    gateway stack that lists it in ALLOWED_ORIGINS."""
    site = StaticSite(files={"/sdk.html": PAGE, "/sdk-page.js": sdk_bundle})
    stack = gateway_stack_factory(origins=[site.url], REALTIME_INSTRUCTIONS=POLICY, **settings)
    site.configure({"gatewayUrl": stack.url})  # connect-src gets the gateway
    site.__enter__()
    page = open_page(browser, site.url + "/sdk.html")
    connect_requests: list = []
    page.on("request", lambda r: connect_requests.append(r) if r.url.endswith("/api/connect") else None)
    return site, stack, page, connect_requests


def wait_for_spoken_turn(page, timeout: float = 40_000) -> None:
    page.wait_for_function(
        "([heard, reply]) => window.sdk.heard().includes(heard) && window.sdk.replies().includes(reply)",
        arg=[SPEECH_TRANSCRIPT, reply_for(SPEECH_TRANSCRIPT)],
        timeout=timeout,
    )


def wait_for_reply(page, text: str, timeout: float = 20_000) -> None:
    page.wait_for_function("t => window.sdk.replies().includes(t)", arg=reply_for(text), timeout=timeout)


def emulator_call(stack, call_id: str) -> dict:
    return requests.get(f"{stack.emulator.url}/_emulator/calls/{call_id}", timeout=10).json()


def policy_restored(stack, call_id: str, timeout: float = 20.0) -> dict:
    end = time.monotonic() + timeout
    info: dict = {}
    while time.monotonic() < end:
        info = emulator_call(stack, call_id)
        if info.get("instructions") == POLICY:
            return info
        time.sleep(0.2)
    raise AssertionError(f"the session policy was not restored: {info}")


def check_connect_request(connect_requests) -> None:
    """The SDK's own POST: raw SDP, its two extra headers (so a preflight), the 201 with Location."""
    (post,) = [r for r in connect_requests if r.method == "POST"]
    headers = post.headers
    assert headers["content-type"] == "application/sdp"
    assert headers["authorization"] == "Bearer ek_not_a_real_key" and headers.get("x-openai-agents-sdk")
    response = post.response()
    assert response.status == 201
    return response.headers["location"]


def test_agents_sdk_through_the_default_filter(speaking_browser, gateway_stack_factory, sdk_bundle):
    site, stack, page, connect_requests = sdk_page(speaking_browser, gateway_stack_factory, sdk_bundle)
    try:
        result = page.evaluate(
            "a => window.sdk.connect(a)", {"gateway": stack.url, "model": "gpt-realtime", "instructions": PIRATE}
        )
        call_id = result["callId"]
        assert call_id and call_id.startswith("rtc_"), result  # read from Location, exposed by CORS
        assert check_connect_request(connect_requests) == f"/api/calls/{call_id}"
        assert emulator_call(stack, call_id)["state"] == "live"
        # The cost of the filter: no session.updated ever reaches the page, so connect() resolved only
        # when the SDK's own 5 s wait ran out.
        assert not result["sessionUpdatedBeforeConnected"]
        assert result["waitedAfterOpenMs"] >= 4900, result

        # A spoken turn: the fake microphone's sentence, its transcription, the answer's transcript
        # and its audio.
        wait_for_spoken_turn(page)
        assert page.evaluate(REMOTE_AUDIO_PEAK, 4000) > 0.02
        assert "session.updated" not in page.evaluate("window.sdk.events.map(e => e.type)")

        # The SDK's session.update (the agent's own instructions) did not change the policy.
        policy_restored(stack, call_id)

        # The second cost: a typed turn's response.create goes out and is answered, but the SDK then
        # waits for a response.done the filter drops, so the next one stays queued.
        assert page.evaluate("t => window.sdk.say(t)", "First typed turn") == [
            "conversation.item.create",
            "response.create",
        ]
        wait_for_reply(page, "First typed turn")
        assert page.evaluate("t => window.sdk.say(t)", "Second typed turn") == ["conversation.item.create"]
        # ...and stays so: the microphone's next spoken turn is answered, the typed one never asked for.
        replies = page.evaluate("window.sdk.replies().length")
        page.wait_for_function("n => window.sdk.replies().length > n", arg=replies, timeout=30_000)
        assert page.evaluate("window.sdk.sent.filter(t => t === 'response.create').length") == 1
        assert reply_for("Second typed turn") not in page.evaluate("window.sdk.replies()")
        page.evaluate("window.sdk.session.close()")
    finally:
        page.close()
        site.__exit__(None, None, None)


def test_agents_sdk_with_the_full_feature_configuration(speaking_browser, gateway_stack_factory, sdk_bundle):
    """WEBRTC_FILTER=false with POLICY_ENFORCE=true and POLICY_MAX_VIOLATIONS=0 (the README's
    configuration for the SDK): connect() returns on the service's session.updated, typed turns are
    not held back, and the policy still holds against the SDK's session.update."""
    site, stack, page, connect_requests = sdk_page(
        speaking_browser,
        gateway_stack_factory,
        sdk_bundle,
        WEBRTC_FILTER="false",
        POLICY_ENFORCE="true",
        POLICY_MAX_VIOLATIONS="0",
    )
    try:
        result = page.evaluate(
            "a => window.sdk.connect(a)", {"gateway": stack.url, "model": "gpt-realtime", "instructions": PIRATE}
        )
        call_id = result["callId"]
        assert call_id and call_id.startswith("rtc_"), result
        assert check_connect_request(connect_requests) == f"/api/calls/{call_id}"
        assert result["sessionUpdatedBeforeConnected"], result
        assert result["waitedAfterOpenMs"] < 4900, result

        wait_for_spoken_turn(page)
        assert page.evaluate(REMOTE_AUDIO_PEAK, 4000) > 0.02
        types = set(page.evaluate("window.sdk.events.map(e => e.type)"))
        assert {"session.created", "session.updated", "response.done"} <= types

        info = policy_restored(stack, call_id)
        assert info["state"] == "live"  # restored, not hung up (POLICY_MAX_VIOLATIONS=0)

        # Typed turns: each response.create goes out (at once, or once the response in progress is
        # done: the SDK sees response.done now) and is answered.
        for text in ("First typed turn", "Second typed turn"):
            assert page.evaluate("t => window.sdk.say(t)", text)[0] == "conversation.item.create"
            wait_for_reply(page, text, timeout=30_000)
        assert page.evaluate("window.sdk.sent.filter(t => t === 'response.create').length") == 2
        page.wait_for_function(
            "() => window.sdk.session.history.some(i => i.role === 'assistant')"
        )  # the SDK's own conversation history follows the call
        # The only errors: the emulator does not implement `conversation.item.retrieve`, which the SDK
        # sends to fill its history (the service does); nothing from the gateway.
        errors = page.evaluate("window.sdk.errors")
        assert [e for e in errors if "conversation.item.retrieve" not in e] == [], errors
        page.evaluate("window.sdk.session.close()")
    finally:
        page.close()
        site.__exit__(None, None, None)
