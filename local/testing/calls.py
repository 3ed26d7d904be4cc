"""Calls archived the way production archives them, for tests and benchmarks: a call made by the
emulator, its CallMessage put on the listener queue, the listener (in a local host) recording it."""

from __future__ import annotations

import time

import requests
from azure.core.exceptions import ResourceExistsError
from azure.storage.queue import QueueClient, TextBase64EncodePolicy

from local.testing.host_process import wait_until
from realtime_gateway.archive.store import Archive
from realtime_gateway.core.message import CallMessage


def start_recorded_call(
    emulator_url: str,
    connection_string: str,
    queue: str,
    archive: Archive,
    days_ago: float = 0,
    origin: str | None = None,
    principal: dict | None = None,
    max_seconds: float = 600,
) -> str:
    """A live emulator call whose listener has attached; `days_ago` dates it (its archive day) back."""
    call_id = requests.post(f"{emulator_url}/_emulator/calls", timeout=10).json()["call_id"]
    now = time.time()
    msg = CallMessage(
        call_id=call_id,
        started_at=now - days_ago * 86400,
        deadline=now + max_seconds,
        origin=origin,
        principal=principal,
        request_id=f"req-{call_id[-8:]}",
        model="gpt-realtime",
        voice="marin",
    )
    q = QueueClient.from_connection_string(connection_string, queue, message_encode_policy=TextBase64EncodePolicy())
    try:
        q.create_queue()
    except ResourceExistsError:
        pass
    q.send_message(msg.to_json())
    wait_until(lambda: (archive.find_session(call_id) or {}).get("state") == "attached", 30, 0.05, "listener attached")
    return call_id


def script(emulator_url: str, call_id: str, responses: int, pad_bytes: int = 0) -> None:
    """Scripted turns (a typed user item and the reply each); returns when they are done."""
    body: dict = {"responses": responses, **({"pad_bytes": pad_bytes} if pad_bytes else {})}
    requests.post(f"{emulator_url}/_emulator/calls/{call_id}/script", json=body, timeout=120).raise_for_status()


def end_and_wait(emulator_url: str | None, call_id: str, archive: Archive) -> dict:
    """End the call as if the browser left (None: let the deadline end it); wait for the archive."""
    if emulator_url:
        requests.post(f"{emulator_url}/_emulator/calls/{call_id}/end", timeout=10)
    return wait_until(
        lambda: (s := archive.find_session(call_id) or {}).get("state") == "ended" and s, 30, 0.05, "call ended"
    )
