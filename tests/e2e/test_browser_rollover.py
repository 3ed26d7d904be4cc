"""A conversation that outlives the service's session cap, in Chromium with the speaking fake
microphone against the local stack (host + emulator + Azurite): the emulator ends every session at
20 s (`session_expired`, the sideband closing 1001), the gateway says so (`SERVICE_SESSION_SECONDS`),
and the page rolls the conversation over to a successor call 10 s before each end
(`rolloverLeadSeconds`). Three calls: no error on the page, the audio received across each switch
(sampled from `getStats` in the page) never stops, each switch onto audio already arriving, the third call's model answers from
the first call's words, and `realtime-audit verify` passes on the conversation. A rollover the
gateway refuses (`MAX_CONVERSATION_SECONDS`) leaves the call to its end, and the page says when
that is, then that the conversation reached its time limit: no alert either time."""

from __future__ import annotations

import contextlib
import io
import re
import time

import pytest

from local.emulator import Emulator
from local.emulator.replies import history_reply
from local.testing.audio_gaps import START_SAMPLING, STOP_SAMPLING, switch_gaps
from local.testing.host_process import wait_until
from realtime_gateway.archive.store import Archive
from realtime_gateway.archive.tables import table_service_from_env
from realtime_gateway.audit.cli import main as audit_main
from tests.e2e.browser_support import StaticSite, open_page, speech_wav, start_call
from tests.fixtures.browser import launch_chromium

CAP_SECONDS = 20
SUITE_GAP_MS = 1500  # far below a call that ended (its audio stops for good: the 2 s window's whole)
FIRST_WORDS = "My favourite colour is teal"

# Every time the page shows an alert, what it said (the page must never show one here).
WATCH_ALERTS = """
() => {
  window.__alerts = [];
  const box = document.getElementById('error');
  const seen = () => { if (!box.hidden && box.textContent) window.__alerts.push(box.textContent); };
  new MutationObserver(seen).observe(box, { attributes: true, childList: true, characterData: true, subtree: true });
}
"""

ROLLOVER_MARKS = """
() => performance.getEntriesByName('realtime:rollover').map((m) => m.detail)
"""


@pytest.fixture(scope="module")
def emulator():
    """This module's own emulator: every session ends at CAP_SECONDS, as Azure's do at 30 minutes."""
    emu = Emulator(port=0, session_max_seconds=CAP_SECONDS).start()
    yield emu
    emu.stop()


@pytest.fixture(scope="module")
def speaking_browser(playwright_instance, tmp_path_factory):
    """Chromium whose fake microphone says a sentence, then is quiet for 5 s (looping): the
    conversation has turns and natural pauses."""
    wav = speech_wav(tmp_path_factory.mktemp("speech"), tail=5.0)
    b = launch_chromium(playwright_instance, [f"--use-file-for-fake-audio-capture={wav}"])
    yield b
    b.close()


@contextlib.contextmanager
def page_on_its_own_site(browser, gateway_stack_factory, lead: int, **settings):
    """The page on a second origin (config.json names the gateway and the lead), so the rollover's
    requests cross CORS as a deployed page's do."""
    site = StaticSite()
    stack = gateway_stack_factory(origins=[site.url], SERVICE_SESSION_SECONDS=CAP_SECONDS, **settings)
    site.configure({"gatewayUrl": stack.url, "rolloverLeadSeconds": lead})
    with site:
        page = open_page(browser, site.url + "/")
        page.evaluate(WATCH_ALERTS)
        try:
            yield stack, page
        finally:
            page.close()


def archive_of(stack) -> Archive:
    s = stack.settings
    return Archive(
        table_service_from_env({"AzureWebJobsStorage": s["AzureWebJobsStorage"]}),
        s["ARCHIVE_EVENTS_TABLE"],
        s["ARCHIVE_SESSIONS_TABLE"],
    )


def chain(archive: Archive, first: str) -> list[str]:
    """The conversation's calls, first to last, by their session rows' `continued_by`."""
    calls = [first]
    while (row := archive.find_session(calls[-1])) and row.get("continued_by"):
        calls.append(str(row["continued_by"]))
    return calls


def say(page, text: str, answer: str) -> None:
    """Type `text`, and wait for `answer` whole on the page (the speaking microphone's own turns
    are answered in between, in whichever order the machine's load makes)."""
    page.fill("#message", text)
    page.keyboard.press("Enter")
    page.wait_for_function(
        """a => [...document.querySelectorAll('#transcript li.assistant[data-done=true]')]
                 .some((li) => li.textContent.includes(a))""",
        arg=answer,
        timeout=20_000,
    )


def test_a_conversation_rolls_over_twice_without_a_gap(speaking_browser, gateway_stack_factory):
    with page_on_its_own_site(speaking_browser, gateway_stack_factory, lead=10) as (stack, page):
        polls: list[tuple[str, float]] = []  # the page's status requests: paced waits, never a tight loop
        page.on(
            "request",
            lambda r: polls.append((r.url, time.monotonic())) if r.method == "GET" and "/api/calls/" in r.url else None,
        )
        first = start_call(page)
        page.evaluate(START_SAMPLING, "#remote-audio")
        say(page, FIRST_WORDS, f"You said: {FIRST_WORDS}")

        # two rollovers: at 10 s before each 20 s cap, at a pause of the looping speech
        page.wait_for_selector("body[data-rollovers='2']", timeout=60_000)
        third = page.text_content("#call-id").strip()
        assert third != first and page.get_attribute("#state", "data-state") == "live"
        # the third call's model heard the first call's words (replayed twice, from call to call)
        said_first = next(i["text"] for i in stack.emulator.conversation(first)["items"] if i["role"] == "user")
        say(page, "what did I say first?", history_reply(said_first))
        samples = page.evaluate(STOP_SAMPLING)
        marks = page.evaluate(ROLLOVER_MARKS)
        page.click("#stop")
        page.wait_for_selector("#state[data-state=ended]", timeout=20_000)
        assert page.text_content("#outcome").startswith("You hung up.")
        assert page.evaluate("window.__alerts") == [] and page.is_hidden("#error")

        # one conversation of three calls, each continuing the one before
        archive = archive_of(stack)
        calls = wait_until(lambda: (c := chain(archive, first)) and len(c) == 3 and c, 20, what="three linked calls")
        assert calls[2] == third
        assert [m["from"] for m in marks] == calls[:2] and [m["to"] for m in marks] == calls[1:]
        assert {m["conversationId"] for m in marks} == {first}
        by_call: dict[str, list[float]] = {}
        for url, at in polls:
            by_call.setdefault(url, []).append(at)
        gaps = [b - a for times in by_call.values() for a, b in zip(times, times[1:], strict=False)]
        assert polls and all(g >= 0.1 for g in gaps), gaps  # each wait starts at 150 ms between looks

        # the page switched each time onto a successor whose audio was already arriving (getStats, in
        # the page), and the audio it plays never stopped: the 300 ms target itself is measured alone,
        # by bench/bench_rollover.py; here, beside the suite's other workers, the loaded emulator's own
        # packet pacing can stall for a few hundred milliseconds
        switches = switch_gaps(samples)
        assert len(switches) == 2, switches
        assert all(s.to_packets > 0 for s in switches), switches
        assert all(s.gap_ms < SUITE_GAP_MS for s in switches), [s.gap_ms for s in switches]
        assert all(m.get("gapMs") is not None and m["gapMs"] < SUITE_GAP_MS for m in marks), marks  # the client's own

        third_saw = [i["text"] for i in stack.emulator.conversation(third)["items"] if i["role"] == "user"]
        assert FIRST_WORDS in third_saw

        # the auditor reads one conversation, each call's chain and the links between them verified
        for call in calls:
            wait_until(lambda c=call: (archive.find_session(c) or {}).get("state") == "ended", 30, what=f"{call} ended")
        s = stack.settings
        argv = ["verify", third, "--connection-string", s["AzureWebJobsStorage"]]
        argv += ["--events-table", s["ARCHIVE_EVENTS_TABLE"], "--sessions-table", s["ARCHIVE_SESSIONS_TABLE"]]
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            code = audit_main(argv)
        verified = [line.split(":")[0] for line in out.getvalue().splitlines() if line.startswith("OK ")]
        assert code == 0 and verified == [f"OK {c}" for c in calls], out.getvalue()


def test_a_refused_rollover_says_when_the_conversation_ends(browser, gateway_stack_factory):
    # the conversation may last 10 s: the rollover (8 s before the 20 s cap) is refused with 409
    with page_on_its_own_site(browser, gateway_stack_factory, lead=8, MAX_CONVERSATION_SECONDS=10) as (stack, page):
        call = start_call(page)
        page.wait_for_selector("#notice:not([hidden])", timeout=30_000)
        notice = page.text_content("#notice")
        m = re.fullmatch(r"The conversation ends in (\d+) seconds\.", notice)
        assert m and 0 < int(m.group(1)) <= 10, notice
        assert page.get_attribute("#state", "data-state") == "live" and page.text_content("#call-id") == call
        assert page.is_hidden("#error")

        # the call runs to the cap; the page says the conversation reached its time limit, as a status
        page.wait_for_selector("body[data-end-reason=limit]", timeout=30_000)
        page.wait_for_selector("#state[data-state=ended]")
        assert page.text_content("#outcome").startswith("The conversation reached its time limit and has ended.")
        assert page.get_attribute("#outcome", "role") == "status" and page.is_hidden("#notice")
        assert page.evaluate("window.__alerts") == [] and page.is_hidden("#error")
        row = archive_of(stack).find_session(call)
        assert row is not None and not row.get("continued_by")  # no successor was started


def test_a_rollover_that_failed_is_tried_once_more(browser, gateway_stack_factory):
    # the lead leaves time for a second attempt: the first one's offer is refused upstream once
    with page_on_its_own_site(browser, gateway_stack_factory, lead=16) as (stack, page):
        first = start_call(page)
        stack.emulator.set_fault("calls", status=400, times=1)
        page.wait_for_selector("body[data-rollovers='1']", timeout=30_000)
        marks = page.evaluate(
            "() => ['rollover-start', 'rollover-failed', 'rollover']"
            ".map((n) => performance.getEntriesByName('realtime:' + n).length)"
        )
        assert marks == [2, 1, 1]
        second = page.text_content("#call-id")
        assert second != first and page.get_attribute("#state", "data-state") == "live"
        assert page.is_hidden("#notice")  # nothing to tell the person: the second attempt came in time
        assert page.evaluate("window.__alerts") == [] and page.is_hidden("#error")
        assert (archive_of(stack).find_session(first) or {}).get("continued_by") == second
        page.click("#stop")
        page.wait_for_selector("#state[data-state=ended]", timeout=20_000)
