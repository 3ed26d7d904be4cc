"""Chromium (Playwright, fake microphone) holds real WebRTC calls with the emulator.

The page is served from its own origin, so the SDP post is cross-origin (CORS preflight) as it is
for a browser talking to the service. The ephemeral key is minted in Python (server-side, as the
gateway does) and handed to the page.
"""

import shutil
import statistics
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from local.emulator import SPEECH_TRANSCRIPT, reply_for
from local.emulator.events import BROWSER_EVENTS
from tests.fixtures.browser import launch_chromium

PAGE = """<!doctype html><meta charset="utf-8"><title>emulator call</title><body><script>
window.runCall = async (base, ek, label) => {
  const stream = await navigator.mediaDevices.getUserMedia({audio: true});
  const pc = new RTCPeerConnection();
  stream.getTracks().forEach(t => pc.addTrack(t, stream));
  const dc = pc.createDataChannel(label);
  const events = [];
  dc.onmessage = (e) => events.push(JSON.parse(e.data));
  const audio = document.createElement('audio');
  audio.autoplay = true; audio.muted = true; document.body.appendChild(audio);
  let level = 0, analyser = null;
  pc.ontrack = (e) => {
    const remote = e.streams[0] || new MediaStream([e.track]);
    audio.srcObject = remote;  // headless Chromium needs the element for the stream to flow
    const ctx = new AudioContext();
    analyser = ctx.createAnalyser();
    ctx.createMediaStreamSource(remote).connect(analyser);
    const buf = new Float32Array(analyser.fftSize);
    setInterval(() => {
      analyser.getFloatTimeDomainData(buf);
      for (const v of buf) level = Math.max(level, Math.abs(v));
    }, 20);
  };
  const opened = new Promise((resolve) => dc.onopen = resolve);
  const t0 = performance.now();
  const offer = await pc.createOffer();
  await pc.setLocalDescription(offer);
  const resp = await fetch(base + '/openai/v1/realtime/calls?webrtcfilter=on', {
    method: 'POST', body: offer.sdp,
    headers: {'Authorization': 'Bearer ' + ek, 'Content-Type': 'application/sdp'}});
  const answer = await resp.text();
  if (resp.status !== 201) throw new Error('calls: ' + resp.status + ' ' + answer);
  await pc.setRemoteDescription({type: 'answer', sdp: answer});
  await opened;
  const openMs = performance.now() - t0;
  window.call = {pc, dc, events, level: () => level};
  return {openMs, location: resp.headers.get('Location')};
};
window.bytesReceived = async () => {
  let total = 0;
  (await window.call.pc.getStats()).forEach((s) => {
    if (s.type === 'inbound-rtp' && s.kind === 'audio') total += s.bytesReceived;
  });
  return total;
};
window.hangUpLocally = () => window.call.pc.close();
</script></body>"""


class _Page(BaseHTTPRequestHandler):
    def do_GET(self):
        body = PAGE.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def page_origin():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Page)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def mint(emu) -> str:
    """Server-side, as the gateway does it: Entra token from the identity endpoint, then a secret.
    (Plain requests: Playwright's sync API owns this thread's event loop.)"""
    token = requests.get(
        emu.identity_endpoint,
        headers={"X-IDENTITY-HEADER": emu.identity_header},
        params={"api-version": "2019-08-01", "resource": "https://cognitiveservices.azure.com"},
        timeout=10,
    ).json()["access_token"]
    r = requests.post(
        f"{emu.url}/openai/v1/realtime/client_secrets",
        timeout=10,
        headers={"Authorization": f"Bearer {token}"},
        json={"session": {"type": "realtime", "model": emu.deployment}},
    )
    r.raise_for_status()
    return r.json()["value"]


def wait_for_event(page, type_, timeout=20.0, count=1):
    page.wait_for_function(
        "([t, n]) => window.call.events.filter(e => e.type === t).length >= n",
        arg=[type_, count],
        timeout=timeout * 1000,
    )
    return page.evaluate("(t) => window.call.events.filter(e => e.type === t)", type_)[count - 1]


def test_chromium_call_events_audio_and_open_time(emulator, browser, page_origin):
    ek = mint(emulator)
    page = browser.new_page()
    try:
        page.goto(page_origin)
        open_ms, left = [], []
        for _ in range(5):
            result = page.evaluate("([u, k]) => runCall(u, k, 'oai-events')", [emulator.url, ek])
            open_ms.append(result["openMs"])
            call_id = result["location"].rsplit("/", 1)[-1]  # Location is readable cross-origin
            assert call_id.startswith("rtc_")
            page.evaluate("hangUpLocally()")
            left.append(call_id)
        # The browser closing its peer connection ends the call on the emulator's side.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(emulator.call_info(c)["state"] == "live" for c in left):
            time.sleep(0.1)
        assert {emulator.call_info(c)["end_reason"] for c in left} == {"peer_closed"}
        median = statistics.median(open_ms)
        print(
            f"\nChromium data channel open (createOffer -> open): median {median:.0f} ms of "
            f"{len(open_ms)} ({', '.join(f'{t:.0f}' for t in open_ms)} ms)"
        )
        assert median < 2000

        result = page.evaluate("([u, k]) => runCall(u, k, 'oai-events')", [emulator.url, ek])
        call_id = result["location"].rsplit("/", 1)[-1]
        before = page.evaluate("bytesReceived()")
        page.evaluate("""() => {
            window.call.dc.send(JSON.stringify({type: 'conversation.item.create', item: {
                type: 'message', role: 'user', content: [{type: 'input_text', text: 'Hello from Chromium'}]}}));
            window.call.dc.send(JSON.stringify({type: 'response.create'}));
        }""")
        done = wait_for_event(page, "response.output_audio_transcript.done")
        wait_for_event(page, "output_audio_buffer.stopped")
        after = page.evaluate("bytesReceived()")
        level = page.evaluate("window.call.level()")
        events = page.evaluate("window.call.events")
        info = emulator.call_info(call_id)
        page.evaluate("hangUpLocally()")
    finally:
        page.close()
    assert done["transcript"] == reply_for("Hello from Chromium")
    assert {e["type"] for e in events} <= BROWSER_EVENTS
    assert after > before + 5000, (before, after)  # the spoken reply arrived over RTP
    assert level > 0.05, level  # ...and it is not silence
    assert info["audio_frames_in"] > 50  # Chromium's microphone reached the emulator
    assert info["speech_segments"] == 0  # its fake beeps are not speech


@pytest.fixture(scope="module")
def spoken_wav(tmp_path_factory):
    if not shutil.which("espeak-ng") or not shutil.which("sox"):
        pytest.fail("espeak-ng and sox are needed to render the test utterance")
    folder = tmp_path_factory.mktemp("speech")
    raw, padded = folder / "raw.wav", folder / "speech.wav"
    subprocess.run(
        ["espeak-ng", "-w", str(raw), "Hello there, could you tell me a short story please?"],
        check=True,
        capture_output=True,
    )
    # Silence first, so the call is up before the sentence plays (capture starts at getUserMedia).
    subprocess.run(["sox", str(raw), "-r", "48000", str(padded), "pad", "2", "1"], check=True)
    return padded


def test_chromium_spoken_utterance_gets_vad_events_and_a_reply(emulator, playwright_instance, page_origin, spoken_wav):
    ek = mint(emulator)
    chromium = launch_chromium(playwright_instance, [f"--use-file-for-fake-audio-capture={spoken_wav}%noloop"])
    try:
        page = chromium.new_page()
        page.goto(page_origin)
        result = page.evaluate("([u, k]) => runCall(u, k, 'realtime-channel')", [emulator.url, ek])
        call_id = result["location"].rsplit("/", 1)[-1]
        started = wait_for_event(page, "input_audio_buffer.speech_started", timeout=15)
        stopped = wait_for_event(page, "input_audio_buffer.speech_stopped", timeout=15)
        transcript = wait_for_event(page, "conversation.item.input_audio_transcription.completed")
        reply = wait_for_event(page, "response.output_audio_transcript.done")
        info = emulator.call_info(call_id)
    finally:
        chromium.close()
    assert started["item_id"] == stopped["item_id"] == transcript["item_id"]
    assert stopped["audio_end_ms"] > started["audio_start_ms"]
    assert transcript["transcript"] == SPEECH_TRANSCRIPT
    assert reply["transcript"] == reply_for(SPEECH_TRANSCRIPT)
    assert info["speech_segments"] >= 1 and info["channel_label"] == "realtime-channel"
