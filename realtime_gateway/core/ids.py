"""Call ids as the service makes them (`rtc_<hex>`): what a route or a table key may carry."""

from __future__ import annotations


def valid_call_id(call_id: str) -> bool:
    return 0 < len(call_id) <= 200 and all(c.isalnum() or c in "_-." for c in call_id)
