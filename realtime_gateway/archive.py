"""The call archive in Table Storage: event rows (split when large, read back whole) and session rows.

Events table: PartitionKey = call id, RowKey = the arrival sequence (10 digits, so it sorts), one
main row per event carrying `event_id`, `event_type`, `received_at`, the chain `hash` and the raw
JSON as received in `payload`, `payload_1`, ...; an event too big for one entity continues on part
rows `<seq>.<k>` that sort right after it. Sessions table: a row per call in PartitionKey `YYYYMMDD`
(listable by day) and an index row `idx-<call id>` / `day` that finds the day from the call id.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Iterable, Iterator, Mapping

from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.data.tables import TableServiceClient, UpdateMode

log = logging.getLogger(__name__)

PROPERTY_CHARS = 32_000      # a string property holds 32,768 UTF-16 units; keep a margin
CHUNKS_PER_ROW = 12          # 12 x 64 KB stays well under the 1 MiB entity limit
BATCH_ENTITIES = 100         # entity-group transaction limit
BATCH_BYTES = 3_500_000      # under the 4 MiB transaction limit, with room for the envelope
SEQ_DIGITS = 10
INDEX_PREFIX = "idx-"


class ArchiveError(RuntimeError):
    """Writing to the archive failed for good; the invocation must fail so the queue retries."""


class ArchiveConflict(ArchiveError):
    """A row at this place already holds a different event (two writers on one call?)."""


def utc_iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="microseconds")


def day_of(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y%m%d")


def row_key(seq: int) -> str:
    return f"{seq:0{SEQ_DIGITS}d}"


def split_utf16(text: str, limit: int = PROPERTY_CHARS) -> list[str]:
    """Cut text into pieces of at most `limit` UTF-16 units, never inside a surrogate pair."""
    if not text:
        return [""]
    if text.isascii() or max(text) <= "\uffff":
        return [text[i:i + limit] for i in range(0, len(text), limit)]
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
    received_at: str          # ISO 8601 UTC with microseconds, hashed as stored
    payload: str              # the raw JSON text exactly as received (or the listener's mark)
    hash: str
    source: str = "service"   # "service" or "listener" (gap and hand-over marks)

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
        "PartitionKey": call_id, "RowKey": key, "seq": rec.seq, "event_id": rec.event_id,
        "event_type": rec.event_type, "received_at": rec.received_at, "hash": rec.hash,
        "source": rec.source, "listener": listener, "chunks": len(chunks), "chars": len(rec.payload),
    }
    head, rest = chunks[:CHUNKS_PER_ROW], chunks[CHUNKS_PER_ROW:]
    for i, piece in enumerate(head):
        main[chunk_name("payload", i)] = piece
    parts = []
    for k in range(0, len(rest), CHUNKS_PER_ROW):
        part = {"PartitionKey": call_id, "RowKey": f"{key}.{k // CHUNKS_PER_ROW + 1:03d}"}
        for i, piece in enumerate(rest[k:k + CHUNKS_PER_ROW]):
            part[chunk_name("payload", i)] = piece
        parts.append(part)
    main["rows"] = 1 + len(parts)
    return parts + [main]


def _row_chunks(row: Mapping[str, Any]) -> list[str]:
    out, i = [], 0
    while chunk_name("payload", i) in row:
        out.append(row[chunk_name("payload", i)] or "")
        i += 1
    return out


def _record(main: Mapping[str, Any], parts: list[Mapping[str, Any]]) -> EventRecord:
    chunks = _row_chunks(main)
    for part in parts:
        chunks += _row_chunks(part)
    return EventRecord(seq=int(main["seq"]), event_id=main.get("event_id", ""),
                       event_type=main.get("event_type", ""), received_at=main.get("received_at", ""),
                       payload="".join(chunks), hash=main.get("hash", ""), source=main.get("source", "service"))


def _escape(value: str) -> str:
    return value.replace("'", "''")


class Archive:
    """Reads and writes one deployment's archive tables. Thread-safe for distinct calls."""

    def __init__(self, service: TableServiceClient, events_table: str, sessions_table: str):
        self.service = service
        self.events = service.get_table_client(events_table)
        self.sessions = service.get_table_client(sessions_table)
        self._tables_ready = False

    def ensure_tables(self) -> None:
        if self._tables_ready:
            return
        for name in (self.events.table_name, self.sessions.table_name):
            try:
                self.service.create_table(name)
            except ResourceExistsError:
                pass
        self._tables_ready = True

    # ---- events -------------------------------------------------------------------------------
    def write_entities(self, entities: list[dict[str, Any]]) -> None:
        """Create rows in entity-group transactions; rows already there with the same event are fine.

        Creates (never upserts) keep earlier rows from being overwritten. A transaction that fails
        because a row exists (a retry whose first commit went through) is redone row by row.
        """
        for batch in _batches(entities):
            try:
                self.events.submit_transaction([("create", e) for e in batch])
            except Exception as exc:  # TableTransactionError and friends
                if not _is_conflict(exc):
                    raise
                for entity in batch:
                    self._create_tolerant(entity)

    def _create_tolerant(self, entity: dict[str, Any]) -> None:
        try:
            self.events.create_entity(entity)
        except ResourceExistsError:
            if "." in entity["RowKey"]:
                # an orphan part row of an event whose main row never landed: rewrite it
                self.events.upsert_entity(entity, mode=UpdateMode.REPLACE)
                return
            existing = self.events.get_entity(entity["PartitionKey"], entity["RowKey"])
            if existing.get("event_id") != entity["event_id"] or existing.get("hash") != entity["hash"]:
                raise ArchiveConflict(f"call {entity['PartitionKey']} row {entity['RowKey']} already holds "
                                      f"event {existing.get('event_id')!r}, not {entity['event_id']!r}")

    def read_events(self, call_id: str, after_seq: int = -1) -> Iterator[EventRecord]:
        """Every event of a call in order, each whole (part rows joined)."""
        flt = f"PartitionKey eq '{_escape(call_id)}'"
        if after_seq >= 0:
            flt += f" and RowKey gt '{row_key(after_seq)}.999'"
        main: Mapping[str, Any] | None = None
        parts: list[Mapping[str, Any]] = []
        for row in self.events.query_entities(flt):
            if "." in row["RowKey"]:
                if main is not None and row["RowKey"].startswith(main["RowKey"] + "."):
                    parts.append(row)
                continue  # an orphan part, never read as an event
            if main is not None:
                yield _record(main, parts)
            main, parts = row, []
        if main is not None:
            yield _record(main, parts)

    def event_index(self, call_id: str) -> list[tuple[int, str, str, str]]:
        """(seq, event_id, hash, received_at) of every event of a call, in order, without payloads."""
        rows = self.events.query_entities(f"PartitionKey eq '{_escape(call_id)}'",
                                          select=["RowKey", "seq", "event_id", "hash", "received_at"])
        return [(int(r["seq"]), r["event_id"], r["hash"], r["received_at"])
                for r in rows if "." not in r["RowKey"] and r.get("seq") is not None]

    # ---- sessions ------------------------------------------------------------------------------
    def open_session(self, call_id: str, day: str, fields: Mapping[str, Any]) -> dict[str, Any]:
        """Create the session and index rows if new; return the session row as stored."""
        index = {"PartitionKey": INDEX_PREFIX + call_id, "RowKey": "day", "day": day, "call_id": call_id}
        try:
            self.sessions.create_entity(index)
        except ResourceExistsError:
            day = self.sessions.get_entity(INDEX_PREFIX + call_id, "day")["day"]
        row = {"PartitionKey": day, "RowKey": call_id, "call_id": call_id, **fields}
        try:
            self.sessions.create_entity(row)
            return row
        except ResourceExistsError:
            return dict(self.sessions.get_entity(day, call_id))

    def update_session(self, call_id: str, day: str, fields: Mapping[str, Any]) -> None:
        """Merge fields into the session row (never replaces what other fields hold)."""
        entity: dict[str, Any] = {"PartitionKey": day, "RowKey": call_id}
        for name, value in fields.items():
            if isinstance(value, str) and len(value) > PROPERTY_CHARS:
                entity.update(split_property(name, value))
            else:
                entity[name] = value
        self.sessions.upsert_entity(entity, mode=UpdateMode.MERGE)

    def find_session(self, call_id: str) -> dict[str, Any] | None:
        try:
            day = self.sessions.get_entity(INDEX_PREFIX + call_id, "day")["day"]
            return session_view(self.sessions.get_entity(day, call_id))
        except ResourceNotFoundError:
            return None

    def sessions_on(self, day: str) -> list[dict[str, Any]]:
        return [session_view(r) for r in self.sessions.query_entities(f"PartitionKey eq '{_escape(day)}'")]


def session_view(row: Mapping[str, Any]) -> dict[str, Any]:
    """A session row with split text properties joined back and JSON properties decoded."""
    out = {k: v for k, v in row.items() if not _is_chunk(k)}
    for name in ("user_transcript", "assistant_transcript"):
        out[name] = join_property(row, name)
    for name in ("counts", "principal", "end_detail_json"):
        if isinstance(out.get(name), str):
            try:
                out[name] = json.loads(out[name])
            except ValueError:
                pass
    return out


def _is_chunk(name: str) -> bool:
    base, _, tail = name.rpartition("_")
    return bool(base) and tail.isdigit() and base in ("user_transcript", "assistant_transcript")


def _batches(entities: list[dict[str, Any]]) -> Iterable[list[dict[str, Any]]]:
    """Group consecutive rows into transactions: <=100 rows, one partition, under 4 MiB."""
    batch: list[dict[str, Any]] = []
    size = 0
    for e in entities:
        n = entity_bytes(e)
        if batch and (len(batch) >= BATCH_ENTITIES or size + n > BATCH_BYTES
                      or e["PartitionKey"] != batch[0]["PartitionKey"]):
            yield batch
            batch, size = [], 0
        batch.append(e)
        size += n
    if batch:
        yield batch


def _is_conflict(exc: Exception) -> bool:
    if isinstance(exc, ResourceExistsError):
        return True
    code = getattr(exc, "error_code", None) or ""
    return "EntityAlreadyExists" in str(code) or "EntityAlreadyExists" in str(exc)
