"""Helpers for the browser tests: a second-origin static host that applies the Static Web Apps
headers (so the page's CSP is exercised), a spoken-utterance WAV for the fake microphone, page
probes (peer-connection stats, performance marks) and axe-core (node_modules) for accessibility."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

from local.processes import free_port

ROOT = Path(__file__).resolve().parents[2]
STATIC = ROOT / "static_web"
# Screenshots and timings go to a temporary folder; `make screenshots` points this at artifacts/.
ARTIFACTS = Path(os.environ.get("ARTIFACTS_DIR") or tempfile.mkdtemp(prefix="gateway-artifacts-"))


def csp_with_gateway(csp: str, gateway_origin: str) -> str:
    """The deploy step the README documents: add the function app's origin to connect-src."""
    parts = [p.strip() for p in csp.split(";") if p.strip()]
    out = []
    for part in parts:
        if part.startswith("connect-src ") and gateway_origin not in part.split():
            part = f"{part} {gateway_origin}"
        out.append(part)
    return "; ".join(out)


def csp_with_frame_ancestors(csp: str, ancestors: str) -> str:
    """The embedding step static_web/README.md documents: name the sites that may frame the page."""
    parts = [p.strip() for p in csp.split(";") if p.strip()]
    return "; ".join(f"frame-ancestors {ancestors}" if p.startswith("frame-ancestors ") else p for p in parts)


def swa_headers(path: str, gateway_origin: str | None, frame_ancestors: str | None = None) -> dict[str, str]:
    """Headers Static Web Apps would add for `path`, from staticwebapp.config.json."""
    config = json.loads((STATIC / "staticwebapp.config.json").read_text())
    headers = dict(config.get("globalHeaders", {}))
    for route in config.get("routes", []):
        if route.get("route") == path:
            headers.update(route.get("headers", {}))
    if gateway_origin and "Content-Security-Policy" in headers:
        headers["Content-Security-Policy"] = csp_with_gateway(headers["Content-Security-Policy"], gateway_origin)
    if frame_ancestors and "Content-Security-Policy" in headers:
        headers["Content-Security-Policy"] = csp_with_frame_ancestors(
            headers["Content-Security-Policy"], frame_ancestors
        )
    return headers


class _Handler(SimpleHTTPRequestHandler):
    extensions_map = {
        **SimpleHTTPRequestHandler.extensions_map,
        ".js": "text/javascript",
        ".json": "application/json",
        ".css": "text/css",
    }

    def __init__(self, *args, site: StaticSite, **kwargs):
        self.site = site
        super().__init__(*args, directory=str(STATIC), **kwargs)

    def end_headers(self) -> None:
        path = urlsplit(self.path).path
        if self.site.swa:
            for name, value in swa_headers(path, self.site.gateway_origin, self.site.frame_ancestors).items():
                self.send_header(name, value)
        super().end_headers()

    def do_GET(self) -> None:
        self.site.requests.append(self.path)
        extra = self.site.files.get(urlsplit(self.path).path)
        if extra is not None:  # a file the test adds next to static_web/ (a host page, a bundle)
            body = extra.encode() if isinstance(extra, str) else extra
            self.send_response(200)
            path = urlsplit(self.path).path
            self.send_header("Content-Type", "text/html" if path.endswith("/") else self.guess_type(path))
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        if urlsplit(self.path).path == "/config.json" and self.site.config is not None:
            body = json.dumps(self.site.config).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        super().do_GET()

    def log_message(self, *args) -> None:  # keep test output readable
        pass


class StaticSite:
    """static_web/ on its own loopback origin, as another static host (or SWA) would serve it.

    `config` replaces config.json (what a deploy writes); the CSP's connect-src gets the
    gateway's origin added, as the README tells deployers to do. `files` ({path: text or bytes})
    are served as well, with the same headers; `frame_ancestors` replaces the CSP's. With
    `swa=False` no Static Web Apps header is sent (another site, e.g. one that embeds the page).
    """

    def __init__(self, config: dict | None = None, files: dict[str, str | bytes] | None = None, swa: bool = True):
        self.configure(config)
        self.swa = swa
        self.files: dict[str, str | bytes] = dict(files or {})
        self.frame_ancestors: str | None = None
        self.requests: list[str] = []
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), partial(_Handler, site=self))
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def configure(self, config: dict | None) -> None:
        """What a deploy does: write config.json and allow the gateway's origin in the CSP."""
        self.config = config
        parts = urlsplit((config or {}).get("gatewayUrl") or "")
        self.gateway_origin = f"{parts.scheme}://{parts.netloc}" if parts.netloc else None

    def __enter__(self) -> StaticSite:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()


def speech_wav(directory: Path, text: str = "Hello, can you hear me?", lead: float = 0.2, tail: float = 2.5) -> Path:
    """A spoken utterance (espeak-ng) padded with silence, 48 kHz mono, for
    `--use-file-for-fake-audio-capture`; the emulator's VAD hears it as speech."""
    espeak, sox = shutil.which("espeak-ng"), shutil.which("sox")
    assert espeak and sox, "espeak-ng and sox are needed to render the test utterance"
    raw, out = directory / "utterance-raw.wav", directory / "utterance.wav"
    subprocess.run([espeak, "-w", str(raw), text], check=True, capture_output=True, timeout=30)
    subprocess.run(
        [sox, str(raw), "-r", "48000", "-c", "1", "-b", "16", str(out), "pad", str(lead), str(tail)],
        check=True,
        capture_output=True,
        timeout=30,
    )
    return out


# Recorded before any page script runs: the page's peer connections, for stats and audio probes.
# Test-side instrumentation only; the shipped page exposes nothing global.
TRACK_PEER_CONNECTIONS = """
(() => {
  const Native = window.RTCPeerConnection;
  window.__pcs = [];
  window.RTCPeerConnection = class extends Native {
    constructor(...args) { super(...args); window.__pcs.push(this); }
    createDataChannel(...args) {  // what a visitor with the developer tools can reach and send on
      const channel = super.createDataChannel(...args);
      (window.__channels = window.__channels || []).push(channel);
      return channel;
    }
  };
  window.__csp = [];
  document.addEventListener('securitypolicyviolation',
    (e) => window.__csp.push(`${e.violatedDirective} ${e.blockedURI}`));
})();
"""

INBOUND_AUDIO_BYTES = """
async () => {
  const pc = window.__pcs[window.__pcs.length - 1];
  if (!pc) return -1;
  let bytes = 0;
  (await pc.getStats()).forEach((s) => { if (s.type === 'inbound-rtp' && s.kind === 'audio') bytes += s.bytesReceived; });
  return bytes;
}
"""

# Headless Chromium reports audioLevel 0; an AnalyserNode on the remote track proves sound.
REMOTE_AUDIO_PEAK = """
async (ms) => {
  const pc = window.__pcs[window.__pcs.length - 1];
  const track = pc.getReceivers().map((r) => r.track).find((t) => t && t.kind === 'audio');
  const ctx = new AudioContext();
  await ctx.resume();
  const analyser = ctx.createAnalyser();
  ctx.createMediaStreamSource(new MediaStream([track])).connect(analyser);
  const buf = new Float32Array(analyser.fftSize);
  let peak = 0;
  const end = performance.now() + ms;
  while (performance.now() < end) {
    analyser.getFloatTimeDomainData(buf);
    for (const v of buf) peak = Math.max(peak, Math.abs(v));
    await new Promise((r) => setTimeout(r, 20));
  }
  await ctx.close();
  return peak;
}
"""

MARKS = """
() => Object.fromEntries(performance.getEntriesByType('mark')
  .filter((m) => m.name.startsWith('realtime:')).map((m) => [m.name.slice(9), m.startTime]))
"""

# Records, at every change of the connection/recorder badges, whether the text box was open and
# the microphone track enabled: the "recorded from the first word" gate, observed in the page.
WATCH_GATE = """
() => {
  window.__gate = [];
  const snap = () => {
    const pc = window.__pcs[window.__pcs.length - 1];
    const sender = pc && pc.getSenders().find((s) => s.track && s.track.kind === 'audio');
    window.__gate.push({
      state: document.getElementById('state').dataset.state,
      recorder: document.getElementById('recorder').dataset.recorder,
      inputDisabled: document.getElementById('message').disabled,
      micEnabled: sender ? sender.track.enabled : null,
    });
  };
  const obs = new MutationObserver(snap);
  for (const id of ['state', 'recorder']) {
    obs.observe(document.getElementById(id), { attributes: true, childList: true, characterData: true, subtree: true });
  }
}
"""

# Every distinct text an assistant turn showed while streaming (proves deltas render as they come).
WATCH_STREAM = """
() => {
  window.__stream = [];
  new MutationObserver(() => {
    for (const li of document.querySelectorAll('#transcript li.assistant')) {
      const text = li.querySelector('.text').textContent;
      const last = window.__stream[window.__stream.length - 1];
      if (!last || last.text !== text || last.id !== li.dataset.itemId) {
        window.__stream.push({ id: li.dataset.itemId, text, busy: li.getAttribute('aria-busy') });
      }
    }
  }).observe(document.getElementById('transcript'), { childList: true, subtree: true, characterData: true, attributes: true });
}
"""


AXE_SCRIPT = ROOT / "node_modules" / "axe-core" / "axe.min.js"
AXE_RUN = """
async () => (await axe.run(document, { resultTypes: ['violations'] })).violations.map((v) => ({
  id: v.id, impact: v.impact, help: v.help,
  nodes: v.nodes.map((n) => `${n.target.join(' ')}: ${n.failureSummary}`),
}))
"""


def axe_violations(page) -> list[dict]:
    """axe-core's WCAG violations on the page as it is now (the script from node_modules, injected
    through the DevTools protocol so the page's CSP does not apply to it)."""
    if not page.evaluate("() => typeof window.axe === 'object'"):
        assert AXE_SCRIPT.exists(), "axe-core is missing: `npm ci` installs it"
        page.evaluate(AXE_SCRIPT.read_text(encoding="utf-8") + "\n;0")
    return page.evaluate(AXE_RUN)


def open_page(browser_or_context, url: str):
    """A fresh page with the test probes installed, loaded and ready."""
    page = browser_or_context.new_page()
    page.add_init_script(TRACK_PEER_CONNECTIONS)
    page.goto(url)
    page.wait_for_selector("body[data-ready=true]")
    return page


def start_call(page, timeout: float = 30_000) -> str:
    """Click Start and wait until the call is live (data channel open, recorder attached)."""
    page.click("#start")
    page.wait_for_selector("#state[data-state=live]", timeout=timeout)
    return page.text_content("#call-id").strip()


def assistant_texts(page) -> list[str]:
    return page.eval_on_selector_all(
        "#transcript li.assistant[data-done=true] .text", "els => els.map(e => e.textContent)"
    )


def user_texts(page) -> list[str]:
    return page.eval_on_selector_all("#transcript li.user[data-done=true] .text", "els => els.map(e => e.textContent)")
