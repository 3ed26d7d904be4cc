"""The writer's bytes: each session-row update costs the same however long the call (the words stay
in the event rows), and the row's `bytes_written` counts every row sent, so a benchmark reads the
bytes per event of a long call from the session rows alone."""

from __future__ import annotations

import json
from typing import Any

from realtime_gateway.archive.codec import entity_bytes
from realtime_gateway.archive.writer import BYTES_FIELD, ArchiveWriter
from realtime_gateway.core.events import parse


class RecordingArchive:
    """The archive's writer-facing surface, in memory: what was sent, entity by entity."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []
        self.session_writes: list[dict[str, Any]] = []
        self.session: dict[str, Any] = {}

    def ensure_tables(self) -> None:
        pass

    def open_session(self, call_id: str, day: str, fields: dict[str, Any]) -> dict[str, Any]:
        self.session = {"PartitionKey": day, "RowKey": call_id, **fields}
        return dict(self.session)

    def iter_index(self, call_id: str, after_seq: int = -1, page_size: int | None = None):
        return iter(())

    def write_entities(self, entities: list[dict[str, Any]]) -> None:
        self.rows += entities

    def update_session(self, call_id: str, day: str, fields: dict[str, Any]) -> None:
        self.session_writes.append(dict(fields))
        self.session.update(fields)


def turn(n: int) -> list[str]:
    """A turn's events: the user's words and the assistant's, as long as a real turn's."""
    user = {
        "type": "conversation.item.input_audio_transcription.completed",
        "item_id": f"u{n}",
        "transcript": "u" * 120,
    }
    said = {"type": "response.output_text.done", "item_id": f"a{n}", "text": "a" * 400}
    return [json.dumps({**e, "event_id": f"event_{n}_{k}"}) for k, e in enumerate((user, said))]


def test_session_updates_stay_the_same_size_and_bytes_written_counts_every_row():
    archive = RecordingArchive()
    # every event flushed and the session row written at once: one update per turn
    w = ArchiveWriter(archive, "rtc_long", "20261201", {"state": "attached"}, flush_interval=0, session_interval=0)
    w.start()
    assert w.ready.wait(5)
    for n in range(300):
        for raw in turn(n):
            w.event(parse(raw), 1_700_000_000.0 + n)
    w.close({"state": "ended"})
    sizes = [entity_bytes(f) for f in archive.session_writes if "head_seq" in f]
    assert len(sizes) >= 10
    # the last update is no bigger than an early one, but for a few more digits in the counts
    assert sizes[-1] - sizes[1] < 64, (sizes[1], sizes[-1])
    assert not any(k.endswith("_transcript") for f in archive.session_writes for k in f)
    sent = sum(entity_bytes(r) for r in archive.rows) + sum(
        entity_bytes({k: v for k, v in f.items() if k != BYTES_FIELD}) for f in archive.session_writes
    )
    assert archive.session[BYTES_FIELD] == sent
    assert (archive.session["user_turns"], archive.session["assistant_turns"]) == (300, 300)
