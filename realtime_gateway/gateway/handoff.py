"""Handing an answered call on, the same for a browser's connect and a phone's webhook: its session
row first (the hang-up checks the capability's hash there, and a call whose listener never runs is
still on the auditor's list), then the listener's queue message."""

from __future__ import annotations

import logging
from typing import Any, Callable, Mapping, Protocol

from .. import telemetry
from ..archive.store import Archive
from ..archive.writer import first_session_fields
from ..core.clock import day_of
from ..core.message import CallMessage
from ..settings import Settings

log = logging.getLogger("realtime_gateway.http")


class HasArchive(Protocol):
    settings: Settings

    @property
    def archive(self) -> Archive: ...


def open_call_row(p: HasArchive, message: CallMessage, rid: str, extra: Mapping[str, Any] | None = None) -> None:
    try:
        p.archive.ensure_tables()
        fields = {**first_session_fields(message, p.settings.strict_recording), **(extra or {})}
        p.archive.open_session(message.call_id, day_of(message.started_at), fields)
    except Exception as exc:  # the call goes on without it; its hang-up then falls back to the page closing media
        log.error("rid=%s call=%s: session row not written (%s)", rid, message.call_id, type(exc).__name__)


def queue_listener(message: CallMessage, enqueue: Callable[[str], None] | None, rid: str) -> str:
    """`queued`, or `not-queued` when the output binding failed: the call works without its recording."""
    try:
        if enqueue is None:
            raise RuntimeError("no queue output binding")
        with telemetry.span("enqueue", kind="producer"):
            enqueue(message.to_json())
    except Exception as exc:  # say so, don't fail the call
        log.error("rid=%s call=%s: listener message not queued (%s: %s)", rid, message.call_id, type(exc).__name__, exc)
        return "not-queued"
    return "queued"
