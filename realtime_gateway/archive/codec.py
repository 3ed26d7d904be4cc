"""How a call's events are laid out in Table Storage rows, and read back whole.

Events table: PartitionKey = call id, RowKey = the arrival sequence (10 digits, so it sorts), one
main row per event carrying `event_id`, `event_type`, `received_at`, the chain `hash` and the raw
JSON as received in `payload`, `payload_1`, ...; an event too big for one entity continues on part
rows `<seq>.<k>` that sort right after it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

PROPERTY_CHARS = 32_000  # a string property holds 32,768 UTF-16 units; keep a margin
CHUNKS_PER_ROW = 12  # 12 x 64 KB stays well under the 1 MiB entity limit
BATCH_ENTITIES = 100  # entity-group transaction limit
BATCH_BYTES = 3_500_000  # under the 4 MiB transaction limit, with room for the envelope
SEQ_DIGITS = 10


def row_key(seq: int) -> str:
    return f"{seq:0{SEQ_DIGITS}d}"


def split_utf16(text: str, limit: int = PROPERTY_CHARS) -> list[str]:
    """Cut text into pieces of at most `limit` UTF-16 units, never inside a surrogate pair."""
    if not text:
        return [""]
    if text.isascii() or max(text) <= "\uffff":
        return [text[i : i + limit] for i in range(0, len(text), limit)]
    pieces, start, units = [], 0, 0
    for i, ch in enumerate(text):
        width = 2 if ch > "\uffff" else 1
        if units + width > limit:
            pieces.append(text[start:i])
            start, units = i, 0
        units += width
    pieces.append(text[start:])
    return pieces


def chunk_name(name: str, index: int) -> str:
    return name if index == 0 else f"{name}_{index}"


def split_property(name: str, text: str) -> dict[str, str]:
    return {chunk_name(name, i): piece for i, piece in enumerate(split_utf16(text))}


def join_property(row: Mapping[str, Any], name: str) -> str:
    parts, i = [], 0
    while chunk_name(name, i) in row:
        parts.append(row[chunk_name(name, i)] or "")
        i += 1
    return "".join(parts)


def entity_bytes(entity: Mapping[str, Any]) -> int:
    """A generous estimate of an entity's size as the service counts it (UTF-16 strings)."""
    return 64 + sum(2 * len(k) + (2 * len(v) if isinstance(v, str) else 16) for k, v in entity.items())


@dataclass(frozen=True)
class EventRecord:
    """One archived event, as the reader receives it and as an auditor reads it back."""

    seq: int
    event_id: str
    event_type: str
    received_at: str  # ISO 8601 UTC with microseconds, hashed as stored
    payload: str  # the raw JSON text exactly as received (or the listener's mark)
    hash: str
    source: str = "service"  # "service" or "listener" (gap and hand-over marks)
    missing_parts: int = 0  # part rows the main row announces but the table no longer holds
    row: str = ""  # the RowKey it was read from (verify compares it with `seq`)

    def event(self) -> Any:
        try:
            return json.loads(self.payload)
        except ValueError:
            return None


def event_entities(call_id: str, rec: EventRecord, listener: int = 0) -> list[dict[str, Any]]:
    """The main row plus any part rows, in write order: parts first so a main row never dangles."""
    chunks = split_utf16(rec.payload)
    key = row_key(rec.seq)
    main: dict[str, Any] = {
        "PartitionKey": call_id,
        "RowKey": key,
        "seq": rec.seq,
        "event_id": rec.event_id,
        "event_type": rec.event_type,
        "received_at": rec.received_at,
        "hash": rec.hash,
        "source": rec.source,
        "listener": listener,
        "chunks": len(chunks),
        "chars": len(rec.payload),
    }
    head, rest = chunks[:CHUNKS_PER_ROW], chunks[CHUNKS_PER_ROW:]
    for i, piece in enumerate(head):
        main[chunk_name("payload", i)] = piece
    parts = []
    for k in range(0, len(rest), CHUNKS_PER_ROW):
        part = {"PartitionKey": call_id, "RowKey": f"{key}.{k // CHUNKS_PER_ROW + 1:03d}"}
        for i, piece in enumerate(rest[k : k + CHUNKS_PER_ROW]):
            part[chunk_name("payload", i)] = piece
        parts.append(part)
    main["rows"] = 1 + len(parts)
    return parts + [main]


def record_from_rows(main: Mapping[str, Any], parts: list[Mapping[str, Any]]) -> EventRecord:
    """An event read back whole: the main row's payload pieces, then each part row's."""
    payload = "".join(join_property(row, "payload") for row in [main, *parts])
    return EventRecord(
        seq=int(main["seq"]),
        event_id=main.get("event_id", ""),
        event_type=main.get("event_type", ""),
        received_at=main.get("received_at", ""),
        payload=payload,
        hash=main.get("hash", ""),
        source=main.get("source", "service"),
        missing_parts=int(main.get("rows") or 1) - 1 - len(parts),
        row=str(main.get("RowKey", "")),
    )


def transaction_batches(entities: list[dict[str, Any]]) -> Iterable[list[dict[str, Any]]]:
    """Group consecutive rows into transactions: <=100 rows, one partition, under 4 MiB."""
    batch: list[dict[str, Any]] = []
    size = 0
    for e in entities:
        n = entity_bytes(e)
        if batch and (
            len(batch) >= BATCH_ENTITIES or size + n > BATCH_BYTES or e["PartitionKey"] != batch[0]["PartitionKey"]
        ):
            yield batch
            batch, size = [], 0
        batch.append(e)
        size += n
    if batch:
        yield batch
