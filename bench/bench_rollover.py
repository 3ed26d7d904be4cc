"""The rollover's switch gap in Chromium: how long the audio a person hears stops when the page
moves a conversation to its successor call before the service's session cap, side by side with
what a fresh call costs (click -> first audio received, click -> the microphone open).

    .venv/bin/python -m bench.bench_rollover [--switches 20] [--fresh 10] [--cap 12] [--lead 7]

The project's page, served by the local host (same origin), the app wired to an in-process emulator
that ends every session at --cap seconds (as Azure does at 30 minutes) and to Azurite, with its
listener on (the successor's history is replayed before the switch). config.json gives the page a
--lead of rollover (what a deploy writes). One conversation: a typed first message, then
--switches rollovers at the page's natural pauses (Chromium's fake microphone beeps, which the
emulator's voice detection does not take for speech), then "what did I say first?", whose answer
must name the first message (so every successor saw the history), else the bench fails.

The gap is read in the page from `getStats` of every peer connection, every ~20 ms: the longest
stretch without a new audio packet on the track the <audio> element plays, within 2 s of each
switch (local/testing/audio_gaps.py; the emulator sends a packet per 20 ms, silence included). The
client's own figure (the `rollover` event's gapMs, from the old call's last packet to the new
call's first after the switch) is reported beside it. A fresh call's click -> first audio is
timed in the page from the click's mark to the first inbound packet.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from bench.common import Report, median, p95, pyplot
from local.azurite import start_azurite
from local.emulator import Emulator
from local.emulator.replies import history_reply
from local.processes import free_port
from local.testing.audio_gaps import RECORD_PEERS, START_SAMPLING, STOP_SAMPLING, switch_gaps
from local.testing.browser import CHROMIUM, CHROMIUM_ARGS
from local.testing.host_process import ROOT, HostProcess, gateway_settings

REPORT_ARGS: list[str] = []
TIMEOUT = 900  # 20 switches of a 12 s session take about 2.5 minutes

STEP_MS = 30_000
FIRST_WORDS = "Remember the word lighthouse"
TARGET_GAP_MS = 300.0

# When the newest peer connection's first audio packet arrives (a fresh call), as a mark.
FIRST_AUDIO = """
() => {
  (async () => {
    for (;;) {
      const pc = window.__pcs[window.__pcs.length - 1];
      let packets = 0;
      if (pc) (await pc.getStats()).forEach((s) => { if (s.type === 'inbound-rtp' && s.kind === 'audio') packets = s.packetsReceived || 0; });
      if (packets > 0) { performance.mark('probe:first-audio'); return; }
      await new Promise((r) => setTimeout(r, 5));
    }
  })();
}
"""

MARKS = """
() => Object.fromEntries(performance.getEntriesByType('mark')
  .filter((m) => m.name.startsWith('realtime:') || m.name.startsWith('probe:')).map((m) => [m.name, m.startTime]))
"""

ROLLOVERS = """
() => {
  const at = (name) => performance.getEntriesByName(name).map((m) => m.startTime);
  return { starts: at('realtime:rollover-start'), switches: at('realtime:rollover-switch'),
           details: performance.getEntriesByName('realtime:rollover').map((m) => m.detail) };
}
"""


def say(page: Any, text: str) -> str:
    before = page.eval_on_selector_all("#transcript li.assistant[data-done=true]", "els => els.length")
    page.fill("#message", text)
    page.keyboard.press("Enter")
    page.wait_for_function(
        "n => document.querySelectorAll('#transcript li.assistant[data-done=true]').length > n",
        arg=before,
        timeout=STEP_MS,
    )
    texts: list[str] = page.eval_on_selector_all(
        "#transcript li.assistant[data-done=true] .text", "els => els.map((e) => e.textContent)"
    )
    return texts[-1]


def fresh_call(context: Any, url: str) -> dict[str, float]:
    """Click Start on a new page: ms to the first audio packet and to the call being live."""
    page = context.new_page()
    try:
        page.goto(url)
        page.wait_for_selector("body[data-ready=true]", timeout=STEP_MS)
        page.evaluate(FIRST_AUDIO)
        page.click("#start")
        page.wait_for_selector("#state[data-state=live]", timeout=STEP_MS)
        page.wait_for_function("() => performance.getEntriesByName('probe:first-audio').length > 0", timeout=STEP_MS)
        m = page.evaluate(MARKS)
        page.click("#stop")
        page.wait_for_selector("#state[data-state=ended]", timeout=STEP_MS)
    finally:
        page.close()
    return {
        "audio": m["probe:first-audio"] - m["realtime:click"],
        "live": m["realtime:state-live"] - m["realtime:click"],
    }


def conversation(context: Any, url: str, switches: int, cap: float) -> dict[str, Any]:
    """One conversation through `switches` rollovers; the samples, the marks and the history's answer."""
    page = context.new_page()
    try:
        page.goto(url)
        page.wait_for_selector("body[data-ready=true]", timeout=STEP_MS)
        page.click("#start")
        page.wait_for_selector("#state[data-state=live]", timeout=STEP_MS)
        first_call = page.text_content("#call-id")
        page.evaluate(START_SAMPLING, "#remote-audio")
        said = say(page, FIRST_WORDS)
        page.wait_for_selector(f"body[data-rollovers='{switches}']", timeout=int((switches + 2) * cap * 1000 + STEP_MS))
        answer = say(page, "what did I say first?")
        samples = page.evaluate(STOP_SAMPLING)
        rollovers = page.evaluate(ROLLOVERS)
        alerts = page.text_content("#error") if page.is_visible("#error") else ""
        page.click("#stop")
        page.wait_for_selector("#state[data-state=ended]", timeout=STEP_MS)
    finally:
        page.close()
    return {
        "first_call": first_call,
        "said": said,
        "answer": answer,
        "samples": samples,
        "rollovers": rollovers,
        "alerts": alerts,
    }


def chart(
    report: Report, gaps: list[float], client: list[float | None], fresh_audio: list[float], fresh_live: list[float]
) -> None:
    plt = pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6), gridspec_kw={"width_ratios": [3, 2]})
    xs = range(1, len(gaps) + 1)
    left.bar(xs, gaps, color="tab:blue", label="switch gap (getStats, sampled in the page)")
    if len(client) == len(gaps):  # (a switch the client had no figure for is left out)
        points = [float("nan") if c is None else c for c in client]
        left.plot(xs, points, "o", color="tab:orange", label="the client's own gapMs")
    left.set_xticks(list(xs))
    left.axhline(TARGET_GAP_MS, color="tab:red", linestyle="--", label=f"target {TARGET_GAP_MS:.0f} ms")
    left.set_xlabel("switch")
    left.set_ylabel("ms without new audio")
    left.legend(fontsize=8)
    right.boxplot([gaps, fresh_audio, fresh_live], showfliers=True)
    right.set_xticks([1, 2, 3], ["switch gap", "fresh call:\nclick → audio", "fresh call:\nclick → live"])
    right.set_ylabel("ms")
    right.set_yscale("log")
    fig.tight_layout()
    report.chart("gap", fig)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--switches", type=int, default=20, help="rollovers in the one conversation")
    ap.add_argument("--fresh", type=int, default=10, help="fresh calls timed for the side by side")
    ap.add_argument("--cap", type=int, default=12, help="the emulator's session cap, s (SERVICE_SESSION_SECONDS >= 10)")
    ap.add_argument("--lead", type=int, default=7, help="the page's rolloverLeadSeconds")
    args = ap.parse_args()
    if not os.path.exists(CHROMIUM):
        raise SystemExit(f"{CHROMIUM} is missing: `make test` installs Debian's chromium")
    from playwright.sync_api import sync_playwright

    report = Report("rollover")
    emu = Emulator(port=0, session_max_seconds=args.cap).start()
    azurite = host = None
    try:
        azurite = start_azurite()
        port = free_port()
        settings = gateway_settings(
            emu,
            azurite,
            port,
            SERVICE_SESSION_SECONDS=args.cap,
            RATE_LIMIT_PER_MINUTE=10**5,
            CONTROL_RATE_PER_MINUTE=10**5,
            MAX_ACTIVE_CALLS=500,
        )
        host = HostProcess(ROOT, settings, static_dir=ROOT / "static_web", port=port)
        url = host.url + "/"
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
            try:
                context = browser.new_context()
                context.add_init_script(RECORD_PEERS)
                # what a deploy writes into config.json: the lead that fits the short session
                context.route("**/config.json", lambda route: route.fulfill(json={"rolloverLeadSeconds": args.lead}))
                fresh_call(context, url)  # warm-up: imports, the token, the secret pool
                fresh = [fresh_call(context, url) for _ in range(args.fresh)]
                run = conversation(context, url, args.switches, args.cap)
            finally:
                browser.close()
    finally:
        if host:
            host.stop()
        if azurite:
            azurite.stop()
        emu.stop()

    if run["said"] != f"You said: {FIRST_WORDS}" or run["answer"] != history_reply(FIRST_WORDS):
        raise SystemExit(f"the last call did not answer from the first: {run['said']!r}, {run['answer']!r}")
    if run["alerts"]:
        raise SystemExit(f"the page showed an error: {run['alerts']!r}")
    switches = switch_gaps(run["samples"])
    if len(switches) != args.switches:
        raise SystemExit(f"{len(switches)} switches of the played audio seen, {args.switches} expected")
    gaps = [s.gap_ms for s in switches]
    details = run["rollovers"]["details"]
    client: list[float | None] = [d.get("gapMs") for d in details]
    client_figures = [c for c in client if c is not None]
    starts = run["rollovers"]["starts"]  # (a failed attempt has a start and no switch)
    durations = [at - max(s for s in starts if s <= at) for at in run["rollovers"]["switches"]]
    fresh_audio = [f["audio"] for f in fresh]
    fresh_live = [f["live"] for f in fresh]

    report.line(
        f"{args.switches} rollovers of one conversation, session cap {args.cap} s, lead {args.lead} s; "
        f"{args.fresh} fresh calls (after one warm-up)"
    )
    report.figure("switch gap: longest stretch without new audio on the played track, within 2 s of a switch", gaps)
    report.figure(
        "the client's own gapMs (old call's last packet -> new call's first after the switch)", client_figures
    )
    report.figure("fresh call: click -> first audio packet", fresh_audio)
    report.figure("fresh call: click -> live (microphone open)", fresh_live)
    report.compare("switch gap vs a fresh call's click -> first audio", gaps, fresh_audio)
    report.figure("rollover start -> switch (continue, ICE, replayed history)", durations)
    report.target(
        f"switch gap p95 < {TARGET_GAP_MS:.0f} ms",
        p95(gaps) < TARGET_GAP_MS,
        f"p95 {p95(gaps):.0f} ms, median {median(gaps):.0f} ms over {len(gaps)} switches "
        f"(a fresh call: median {median(fresh_audio):.0f} ms click -> audio)",
    )
    chart(report, gaps, client, fresh_audio, fresh_live)
    report.save()


if __name__ == "__main__":
    main()
