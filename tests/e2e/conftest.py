"""The e2e tier's Chromium (tests/fixtures/browser.py), for the files of this package only."""

from tests.fixtures.browser import browser, playwright_instance

__all__ = ["browser", "playwright_instance"]
