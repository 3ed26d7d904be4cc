"""Click to data channel open and to the first assistant transcript in Chromium: the project's page
through the gateway vs a browser talking straight to the emulator with a secret already held (the
floor), side by side in one run.

    .venv/bin/python -m bench.bench_browser [--n 10] [--latency 0 250]

Gateway: static_web/ served by the local host (same origin), the app wired to the emulator and
Azurite with its listener on, as a person uses it: click Start; the text box opens once the data
channel is open and the recorder is attached (the recorder gate); a message is sent from it at once.
Floor: a minimal page (the pattern of OpenAI's browser examples) that, on click, opens the mic,
creates the RTCPeerConnection and data channel and posts the offer to the emulator's
/openai/v1/realtime/calls?webrtcfilter=on with `Authorization: Bearer <secret>`, the secret minted
by the bench beforehand (untimed); its text box opens when the data channel does. The floor page is
served from its own loopback origin, so its post is cross-origin, as to the real service (the
emulator answers CORS; the preflight is cached after the warm-up). On both pages the message is
submitted by an in-page hook the moment the box opens (a person typing instantly), so no automation
round trip sits in "click -> first assistant text".

Every figure is read from performance marks in the page (the client module's `realtime:*` marks,
plus probes this bench installs: when the offer post starts and answers, when an assistant turn first
shows text). Each upstream request of the emulator (client_secrets, calls, the sideband upgrade) is
delayed by --latency ms (Azure takes about 250 ms); paths alternate so drift hits both.
"""

from __future__ import annotations

import argparse
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from bench.common import Report, Upstream, median, pyplot
from local.azurite import start_azurite
from local.emulator import Emulator, reply_for
from local.processes import free_port
from local.testing.browser import CHROMIUM, CHROMIUM_ARGS
from local.testing.host_process import ROOT, HostProcess, gateway_settings

REPORT_ARGS: list[str] = []
LONG_ARGS = ["--n", "30"]
TIMEOUT = 600  # --long (n=30) takes about 4 minutes

STEP_MS = 30_000  # per browser step; generous for a loaded 2-core machine

# Installed before any page script, on both pages: when the offer post starts and when its answer's
# headers arrive (the client module calls the global fetch), and when an assistant turn first shows text.
PROBES = r"""
(() => {
  const mark = (n) => { try { performance.mark(n); } catch {} };
  const nativeFetch = window.fetch.bind(window);
  window.fetch = (input, init) => {
    const url = String((input && input.url) || input);
    if (!(init && init.method === 'POST' && /\/api\/connect$|\/realtime\/calls\?/.test(url))) return nativeFetch(input, init);
    mark('probe:offer-sent');
    const p = nativeFetch(input, init);
    p.then(() => mark('probe:offer-answered'), () => {});
    return p;
  };
  const Native = window.RTCPeerConnection;
  window.RTCPeerConnection = class extends Native {
    constructor(...args) {
      super(...args);
      this.addEventListener('icegatheringstatechange', () => { if (this.iceGatheringState === 'complete') mark('probe:ice-complete'); });
    }
    async setLocalDescription(...args) { await super.setLocalDescription(...args); mark('probe:local-description'); }
  };
  document.addEventListener('DOMContentLoaded', () => {
    // The person types at once: the message goes the moment the text box opens (no automation round trips).
    const box = document.getElementById('message');
    new MutationObserver(() => {
      if (!box.disabled && window.__say) { box.value = window.__say; window.__say = null; box.form.requestSubmit(); }
    }).observe(box, { attributes: true, attributeFilter: ['disabled'] });
    const list = document.getElementById('transcript');
    const obs = new MutationObserver(() => {
      for (const el of list.querySelectorAll('li.assistant .text')) {
        if (el.textContent && el.textContent !== '\u2026') { mark('probe:assistant-text'); obs.disconnect(); return; }
      }
    });
    obs.observe(list, { childList: true, subtree: true, characterData: true });
  });
})();
"""

MARKS = """
() => Object.fromEntries(performance.getEntriesByType('mark')
  .filter((m) => m.name.startsWith('realtime:') || m.name.startsWith('probe:')).map((m) => [m.name, m.startTime]))
"""

FIRST_ASSISTANT_DONE = """
() => { const li = document.querySelector('#transcript li.assistant');
        return li && li.dataset.done === 'true' ? li.querySelector('.text').textContent : null; }
"""

# The floor: what a page talking to the service directly does at least (no gateway, no recorder).
FLOOR_PAGE = """<!doctype html><meta charset="utf-8"><title>floor</title>
<button id="start">Start</button> <button id="stop">Hang up</button>
<form id="form"><input id="message" disabled></form><ul id="transcript"></ul><audio id="audio" autoplay></audio>
<script>
let base = null, secret = null, pc = null, dc = null, stream = null;
const mark = (n) => performance.mark('realtime:' + n);
const ui = { message: document.getElementById('message'), transcript: document.getElementById('transcript') };
const turns = new Map();
function turn(id) {
  let li = turns.get(id);
  if (!li) {
    li = document.createElement('li'); li.className = 'assistant'; li.dataset.done = 'false';
    li.innerHTML = '<span class="text"></span>'; ui.transcript.append(li); turns.set(id, li);
  }
  return li;
}
function onEvent(e) {
  if (e.type === 'response.output_audio_transcript.delta' || e.type === 'response.output_text.delta') {
    turn(e.item_id).querySelector('.text').textContent += e.delta || '';
  } else if (e.type === 'response.output_audio_transcript.done' || e.type === 'response.output_text.done') {
    const li = turn(e.item_id);
    li.querySelector('.text').textContent = e.transcript ?? e.text ?? li.querySelector('.text').textContent;
    li.dataset.done = 'true';
  }
}
window.arm = (b, k) => { base = b; secret = k; };
window.hangup = () => { if (dc) dc.close(); if (pc) pc.close(); if (stream) stream.getTracks().forEach((t) => t.stop()); };
document.getElementById('start').addEventListener('click', async () => {
  mark('click');
  stream = await navigator.mediaDevices.getUserMedia({
    audio: { echoCancellation: true, noiseSuppression: true, autoGainControl: true } });
  pc = new RTCPeerConnection();
  pc.addTrack(stream.getAudioTracks()[0], stream);
  pc.ontrack = (ev) => { const a = document.getElementById('audio'); a.srcObject = ev.streams[0]; a.play().catch(() => {}); };
  dc = pc.createDataChannel('oai-events');
  dc.onmessage = (ev) => onEvent(JSON.parse(ev.data));
  dc.onopen = () => { mark('datachannel-open'); ui.message.disabled = false; };
  await pc.setLocalDescription(await pc.createOffer());
  const r = await fetch(base + '/openai/v1/realtime/calls?webrtcfilter=on', { method: 'POST', body: pc.localDescription.sdp,
    headers: { Authorization: 'Bearer ' + secret, 'Content-Type': 'application/sdp' } });
  const answer = await r.text();
  if (r.status !== 201) { document.body.dataset.error = r.status + ' ' + answer; return; }
  window.__callId = (r.headers.get('Location') || '').split('/').pop();
  await pc.setRemoteDescription({ type: 'answer', sdp: answer });
  mark('answer');
});
document.getElementById('form').addEventListener('submit', (ev) => {
  ev.preventDefault();
  dc.send(JSON.stringify({ type: 'conversation.item.create',
    item: { type: 'message', role: 'user', content: [{ type: 'input_text', text: ui.message.value }] } }));
  dc.send(JSON.stringify({ type: 'response.create' }));
  mark('text-sent');
  ui.message.value = '';
});
document.body.dataset.ready = 'true';
</script>"""


class FloorSite:
    """FLOOR_PAGE on its own loopback origin."""

    def __init__(self) -> None:
        page = FLOOR_PAGE.encode()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(page)))
                self.end_headers()
                self.wfile.write(page)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def run_once(context: Any, which: str, url: str, text: str, upstream: Upstream, emu_url: str) -> dict[str, float]:
    """One call: click, the message sent as the text box opens, the first assistant text, hang up."""
    secret = upstream.held_secret() if which == "floor" else None  # held beforehand: untimed
    page = context.new_page()
    try:
        page.goto(url)
        page.wait_for_selector("body[data-ready=true]", timeout=STEP_MS)
        if secret:
            page.evaluate("([b, k]) => arm(b, k)", [emu_url, secret])
        page.evaluate("(t) => { window.__say = t; }", text)
        page.click("#start")
        page.wait_for_function("() => performance.getEntriesByName('probe:assistant-text').length > 0", timeout=STEP_MS)
        marks = page.evaluate(MARKS)
        page.wait_for_function(FIRST_ASSISTANT_DONE, timeout=STEP_MS)
        # The first assistant text must be the reply to our message (not to a sound the fake mic made).
        answer = page.evaluate(FIRST_ASSISTANT_DONE)
        if answer != reply_for(text):
            raise RuntimeError(f"{which}: first assistant turn was {answer!r}, not the reply to {text!r}")
        if which == "gateway":
            page.click("#stop")
            page.wait_for_selector("#state[data-state=ended]", timeout=STEP_MS)
        else:
            call_id = page.evaluate("window.__callId")
            page.evaluate("hangup()")
            # 404: closing the peer connection already ended it
            assert upstream.hangup(call_id) in (200, 404)
    except Exception as exc:
        try:
            seen: dict[str, float] = page.evaluate(MARKS)
        except Exception:  # the page itself is gone: report what failed
            seen = {}
        order = [name for name, _ in sorted(seen.items(), key=lambda kv: kv[1])]
        raise RuntimeError(f"{which} call failed: {exc}; marks so far: {order}") from exc
    finally:
        page.close()
    return timings(which, marks)


def timings(which: str, m: dict[str, float]) -> dict[str, float]:
    def since(a: str, b: str) -> float:
        return m[b] - m[a]

    gate = "realtime:state-live" if which == "gateway" else "realtime:datachannel-open"
    out = {
        "datachannel": since("realtime:click", "realtime:datachannel-open"),
        "gate": since("realtime:click", gate),
        "transcript": since("realtime:click", "probe:assistant-text"),
        # phases, in order
        "to_offer": since("realtime:click", "probe:offer-sent"),
        "offer_rtt": since("probe:offer-sent", "probe:offer-answered"),
        "to_channel": since("probe:offer-answered", "realtime:datachannel-open"),
        "channel_to_gate": since("realtime:datachannel-open", gate),
        "gate_to_sent": since(gate, "realtime:text-sent"),
        "sent_to_text": since("realtime:text-sent", "probe:assistant-text"),
    }
    out["ice"] = since("realtime:click", "probe:ice-complete") if "probe:ice-complete" in m else float("nan")
    # What the offer waited after it was ready (the client module gathers ICE candidates first; the floor does not).
    out["ice_wait"] = since("probe:local-description", "probe:offer-sent")
    out["datachannel_less_ice_wait"] = out["datachannel"] - out["ice_wait"]
    if which == "gateway":
        out["recorder"] = since("realtime:click", "realtime:recorder-attached")
    return out


PHASES = [
    ("to_offer", "click → offer posted"),
    ("offer_rtt", "offer post → answer"),
    ("to_channel", "answer → data channel open"),
    ("channel_to_gate", "data channel → gate open"),
    ("gate_to_sent", "gate → text sent"),
    ("sent_to_text", "text sent → first assistant text"),
]


def chart(report: Report, results: dict[int, dict[str, list[dict[str, float]]]]) -> None:
    """Median phases as stacked bars, one pair per latency: where the time goes."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 1.2 + 0.9 * len(results)))
    labels, y = [], 0
    colors = plt.get_cmap("tab10").colors
    for latency, paths in results.items():
        for which in ("floor", "gateway"):
            left = 0.0
            for i, (key, name) in enumerate(PHASES):
                width = max(0.0, median([r[key] for r in paths[which]]))
                ax.barh(y, width, left=left, color=colors[i], label=name if y == 0 else None)
                left += width
            labels.append(f"{which}, {latency} ms upstream")
            y += 1
    ax.set_yticks(range(len(labels)), labels)
    ax.invert_yaxis()
    ax.set_xlabel("ms after the click (median of each phase)")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=3, fontsize=8)
    report.chart("phases", fig)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=10, help="timed calls per path and latency")
    ap.add_argument("--warmup", type=int, default=1, help="untimed calls per path and latency")
    ap.add_argument("--latency", type=int, nargs="+", default=[0, 250], help="ms added to each upstream request")
    args = ap.parse_args()
    if not os.path.exists(CHROMIUM):
        raise SystemExit(f"{CHROMIUM} is missing: `make test` installs Debian's chromium")
    from playwright.sync_api import sync_playwright

    report = Report("browser")
    results: dict[int, dict[str, list[dict[str, float]]]] = {}
    emu = Emulator(port=0).start()
    azurite = None
    host = None
    floor_site = None
    try:
        azurite = start_azurite()
        port = free_port()
        # The limiter stays on (it is on the path) but never refuses the bench; the listener runs (the gate).
        settings = gateway_settings(emu, azurite, port, RATE_LIMIT_PER_MINUTE=10**5, MAX_ACTIVE_CALLS=500)
        host = HostProcess(ROOT, settings, static_dir=ROOT / "static_web", port=port)
        floor_site = FloorSite()
        upstream = Upstream(emu.url, emu.identity_endpoint, emu.identity_header)
        urls = {"gateway": host.url + "/", "floor": floor_site.url}
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
            try:
                contexts = {which: browser.new_context() for which in urls}
                for context in contexts.values():
                    context.add_init_script(PROBES)
                count = 0

                def call(which: str) -> dict[str, float]:
                    nonlocal count
                    count += 1
                    out = run_once(contexts[which], which, urls[which], f"Bench message {count}", upstream, emu.url)
                    time.sleep(0.3)  # let the pool refill and the listener finish, as between people
                    return out

                for which in ("gateway", "floor", "gateway", "floor"):  # imports, token, pool, preflight cache
                    call(which)
                for latency in args.latency:
                    emu.clear_faults()
                    if latency:
                        for target in ("client_secrets", "calls", "sideband"):
                            emu.set_fault(target, delay=latency / 1000, times=0)
                    runs: dict[str, list[dict[str, float]]] = {"gateway": [], "floor": []}
                    for i in range(args.warmup + args.n):
                        for which in ("gateway", "floor") if i % 2 == 0 else ("floor", "gateway"):
                            out = call(which)
                            if i >= args.warmup:
                                runs[which].append(out)
                    results[latency] = runs
                    emu.clear_faults()
            finally:
                browser.close()
    finally:
        if floor_site:
            floor_site.stop()
        if host:
            host.stop()
        if azurite:
            azurite.stop()
        emu.stop()

    ratios: dict[int, float] = {}
    for latency, runs in results.items():
        gw, fl = runs["gateway"], runs["floor"]

        def col(rs: list[dict[str, float]], key: str) -> list[float]:
            return [r[key] for r in rs]

        label = f"{latency} ms upstream"
        ratios[latency] = report.compare(
            f"click -> data channel open, gateway vs floor, {label}", col(gw, "datachannel"), col(fl, "datachannel")
        )
        report.compare(
            f"click -> first assistant text, gateway vs floor, {label}", col(gw, "transcript"), col(fl, "transcript")
        )
        report.figure(f"gateway click -> recorder attached, {label}", col(gw, "recorder"))
        report.figure(f"gateway click -> gate open (text box enabled), {label}", col(gw, "gate"))
        report.figure(f"gateway data channel open -> gate open, {label}", col(gw, "channel_to_gate"))
        report.line(
            f"click -> ICE gathering complete, {label}: gateway median {median(col(gw, 'ice')):.0f} ms, floor "
            f"{median(col(fl, 'ice')):.0f} ms; offer ready -> posted (the client's wait for it): gateway median "
            f"{median(col(gw, 'ice_wait')):.0f} ms, floor {median(col(fl, 'ice_wait')):.0f} ms"
        )
        report.compare(
            f"click -> data channel open less that wait, gateway vs floor, {label}",
            col(gw, "datachannel_less_ice_wait"),
            col(fl, "datachannel_less_ice_wait"),
        )
        for which, rs in (("floor", fl), ("gateway", gw)):
            parts = ", ".join(f"{name} {median(col(rs, key)):.0f}" for key, name in PHASES)
            report.line(f"  {which} phases (median ms), {label}: {parts}")
    if ratios:
        latency = 250 if 250 in ratios else max(ratios)
        report.target(
            "click to data channel within 1.2x of the browser floor",
            ratios[latency] <= 1.2,
            f"{ratios[latency]:.2f}x (median, {latency} ms upstream"
            + "".join(f"; {r:.2f}x at {lat} ms" for lat, r in ratios.items() if lat != latency)
            + ")",
        )
        chart(report, results)
    report.save()


if __name__ == "__main__":
    main()
