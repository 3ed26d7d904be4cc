"""The tamper-evidence chain over a call's archived events: each link hashes the previous one."""

from __future__ import annotations

import hashlib


def genesis(call_id: str) -> str:
    """The chain's start, bound to the call so rows cannot be moved between calls."""
    return hashlib.sha256(f"realtime-call:{call_id}".encode()).hexdigest()


def link(prev: str, seq: int, event_id: str, event_type: str, received_at: str, payload: str) -> str:
    h = hashlib.sha256()
    for part in (prev, str(seq), event_id, event_type, received_at):
        h.update(part.encode("utf-8"))
        h.update(b"\n")
    h.update(payload.encode("utf-8", "surrogatepass"))
    return h.hexdigest()
