"""Tools for the listener tests (TOOLS_MODULE=tests.fixture_app.tools): one that works, one that
raises, one that outlives its time limit; and a guardrail hook
(GUARDRAIL_HOOK=tests.fixture_app.tools:flag_secret_plan)."""

import time


def echo(text: str, times: int = 1) -> dict:
    return {"echo": text * times}


def explode() -> None:
    raise RuntimeError("boom")


def slow(seconds: float) -> dict:
    time.sleep(seconds)
    return {"slept": seconds}


def flag_secret_plan(text: str) -> str | None:
    """The hook's contract: a reason (blocks the response) or None (lets it pass)."""
    return "mentions the secret plan" if "secret plan" in text.lower() else None
