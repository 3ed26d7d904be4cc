"""The page in every state a person can reach (idle, live, blocked autoplay, ended, refused), checked
with axe-core in Chromium (zero violations, light and dark), and the fixes it asks for: the skip
link lands on something focusable, Mute keeps its name and says its state with aria-pressed only,
and a browser that blocks autoplay gets a visible control that plays the assistant's voice."""

from __future__ import annotations

from tests.e2e.browser_support import axe_violations, open_page, start_call

# Test-side stand-in for a browser that plays sound only from a tap on a control (iOS Safari, or
# Chrome's stricter autoplay settings): the `autoplay` attribute does nothing, and play() rejects
# with NotAllowedError unless it runs inside a click on the page's play control.
AUTOPLAY_NEEDS_A_TAP = """
(() => {
  document.addEventListener('DOMContentLoaded', () => {
    for (const el of document.querySelectorAll('audio, video')) el.autoplay = false;
  });
  const play = HTMLMediaElement.prototype.play;
  let tapped = false;
  window.__playRefused = 0;
  document.addEventListener('click', (e) => {
    tapped = e.target && e.target.id === 'play-audio';
    setTimeout(() => { tapped = false; });
  }, true);
  HTMLMediaElement.prototype.play = function () {
    if (!tapped) {
      window.__playRefused += 1;
      return Promise.reject(new DOMException('play() needs a user gesture', 'NotAllowedError'));
    }
    return play.call(this);
  };
})();
"""


def no_violations(page, state: str) -> None:
    for scheme in ("light", "dark"):
        page.emulate_media(color_scheme=scheme)
        found = axe_violations(page)
        assert found == [], f"{state} ({scheme}): {found}"
    page.emulate_media(color_scheme="light")


def test_axe_finds_nothing_in_idle_live_ended_and_refused_states(browser, gateway_stack):
    page = open_page(browser, gateway_stack.url + "/")
    no_violations(page, "idle")
    # control: axe does report what it should (a button with no name), so the empty lists mean something
    page.evaluate(
        "document.getElementById('mute').dataset.label = document.getElementById('mute').textContent;"
        "document.getElementById('mute').textContent = ''"
    )
    assert "button-name" in [v["id"] for v in axe_violations(page)]
    page.evaluate("document.getElementById('mute').textContent = document.getElementById('mute').dataset.label")

    start_call(page)
    assert page.text_content("#time-left") not in ("", "—")
    no_violations(page, "live")
    page.click("#stop")
    page.wait_for_selector("#outcome:not([hidden])")
    no_violations(page, "ended")

    gateway_stack.emulator.set_fault("calls", status=429, retry_after=30)
    page.click("#start")
    page.wait_for_selector("#error:not([hidden])", timeout=20_000)
    assert "Try again in 30 seconds." in page.text_content("#error")
    no_violations(page, "error")
    page.close()


def test_skip_link_lands_on_the_call_and_mute_keeps_its_name(browser, gateway_stack):
    page = open_page(browser, gateway_stack.url + "/")
    target = page.get_attribute("a.skip", "href")
    assert target == "#main"
    assert page.evaluate(
        "t => { const el = document.querySelector(t); return !!el && !el.disabled && el.tabIndex >= -1 }", target
    )
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.className") == "skip"
    page.keyboard.press("Enter")
    assert page.evaluate("document.activeElement.id") == "main"

    start_call(page)
    mute = page.get_by_role("button", name="Mute")
    assert mute.get_attribute("aria-pressed") == "false"
    mute.click()
    assert mute.get_attribute("aria-pressed") == "true" and mute.text_content() == "Mute"
    assert page.get_by_role("button", name="Mute", pressed=True).count() == 1
    assert page.evaluate("window.__pcs.at(-1).getSenders()[0].track.enabled") is False
    mute.click()
    assert mute.get_attribute("aria-pressed") == "false" and mute.text_content() == "Mute"
    assert page.evaluate("window.__pcs.at(-1).getSenders()[0].track.enabled") is True
    page.click("#stop")
    page.wait_for_selector("#state[data-state=ended]")
    page.close()


def test_blocked_autoplay_shows_a_play_control(browser, gateway_stack):
    context = browser.new_context()
    context.add_init_script(AUTOPLAY_NEEDS_A_TAP)
    page = open_page(context, gateway_stack.url + "/")
    assert page.is_hidden("#play-audio")
    start_call(page)
    play = page.get_by_role("button", name="Play the assistant's voice")
    play.wait_for(state="visible")
    assert page.evaluate("window.__playRefused") >= 1
    assert page.evaluate("document.getElementById('remote-audio').paused") is True
    assert "did not let the assistant's voice play by itself" in page.text_content("#notice")
    no_violations(page, "autoplay blocked")
    play.click()
    play.wait_for(state="hidden")
    assert page.evaluate("document.getElementById('remote-audio').paused") is False
    assert page.is_hidden("#notice")
    page.click("#stop")
    page.wait_for_selector("#state[data-state=ended]")
    context.close()
