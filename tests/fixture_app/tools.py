"""Tools for the listener tests (TOOLS_MODULE=tests.fixture_app.tools): one that works, one that
raises, one that outlives its time limit."""

import time


def echo(text: str, times: int = 1) -> dict:
    return {"echo": text * times}


def explode() -> None:
    raise RuntimeError("boom")


def slow(seconds: float) -> dict:
    time.sleep(seconds)
    return {"slept": seconds}
