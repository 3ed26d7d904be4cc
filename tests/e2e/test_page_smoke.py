"""Smoke: Chromium (fake microphone) loads the page the local host serves from static_web/,
with every same-origin resource found and no script error."""

from urllib.parse import urlsplit

from local.testing.host_process import ROOT


def test_page_served_by_the_host_loads_in_chromium(gateway_stack, browser):
    assert (ROOT / "static_web" / "index.html").exists(), "static_web/index.html is missing"
    page = browser.new_page()
    errors, failed = [], []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: msg.type == "error" and errors.append(msg.text))
    origin = gateway_stack.url
    page.on("response", lambda r: r.status >= 400 and r.url.startswith(origin) and failed.append((r.status, r.url)))
    page.on("requestfailed", lambda r: failed.append(("failed", r.url)))
    try:
        response = page.goto(origin + "/", wait_until="networkidle")
        assert response.status == 200
        assert response.headers["content-type"].startswith("text/html")
        assert page.title().strip()
        assert page.locator("button").count() >= 1 and page.locator("button").first.is_visible()
        # The stack is offline: every script comes from the host itself, none from a CDN.
        scripts = page.evaluate("[...document.scripts].map(s => s.src).filter(Boolean)")
        assert all(urlsplit(s).netloc == urlsplit(origin).netloc for s in scripts)
        assert failed == [] and errors == []
    finally:
        page.close()
