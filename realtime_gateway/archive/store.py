"""The call archive's two tables: event rows (laid out by `codec`) and session rows.

Sessions table: a row per call in PartitionKey `YYYYMMDD` (listable by day), an index row
`idx-<call id>` / `day` that finds the day from the call id, and, while retention deletes a call,
a row `purging` / `<call id>` and `purge_started_at` on its session row. Every read and write of the archive
goes through `Archive`, so the row layout is known in one place.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Iterator, Mapping

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import TableServiceClient, UpdateMode

from .codec import (
    PROPERTY_CHARS,
    EventRecord,
    join_property,
    record_from_rows,
    row_key,
    split_property,
    transaction_batches,
)
from .summary import LEGACY_TRANSCRIPTS

log = logging.getLogger(__name__)

INDEX_PREFIX = "idx-"
PURGE_PARTITION = "purging"  # sorts after every day key, so day ranges never list it
PAGE_HANGUP_FIELD = "page_hangup_at"  # on a session row: the gateway's hang-up route ended the call
PURGE_FIELD = "purge_started_at"  # on a session row: retention is deleting this call (since then)


class ArchiveError(RuntimeError):
    """Writing to the archive failed for good; the invocation must fail so the queue retries."""


class ArchiveConflict(ArchiveError):
    """A row at this place already holds a different event (two writers on one call?)."""


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
        for batch in transaction_batches(entities):
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
                raise ArchiveConflict(
                    f"call {entity['PartitionKey']} row {entity['RowKey']} already holds "
                    f"event {existing.get('event_id')!r}, not {entity['event_id']!r}"
                ) from None

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
                yield record_from_rows(main, parts)
            main, parts = row, []
        if main is not None:
            yield record_from_rows(main, parts)

    def event_index(self, call_id: str, after_seq: int = -1) -> list[tuple[int, str, str, str]]:
        """(seq, event_id, hash, received_at) of every event of a call (after `after_seq`), in order,
        without payloads."""
        return list(self.iter_index(call_id, after_seq))

    def iter_index(
        self, call_id: str, after_seq: int = -1, page_size: int | None = None
    ) -> Iterator[tuple[int, str, str, str]]:
        """event_index, row by row as the pages come (`page_size` rows a page; the service's 1,000
        by default): a reader that keeps only some of them never holds them all."""
        flt = f"PartitionKey eq '{_escape(call_id)}'"
        if after_seq >= 0:
            flt += f" and RowKey gt '{row_key(after_seq)}.999'"
        rows = self.events.query_entities(
            flt, select=["RowKey", "seq", "event_id", "hash", "received_at"], results_per_page=page_size
        )
        for r in rows:
            if "." not in r["RowKey"] and r.get("seq") is not None:
                yield int(r["seq"]), r["event_id"], r["hash"], r["received_at"]

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

    def mark_page_hangup(self, call_id: str, at: str) -> bool:
        """The gateway's hang-up route: the page ended this call (the service's close says only
        1001), so its listener records `hangup`, not `limit`. False when the call has no row."""
        try:
            day = self.sessions.get_entity(INDEX_PREFIX + call_id, "day")["day"]
            self.sessions.update_entity(
                {"PartitionKey": day, "RowKey": call_id, PAGE_HANGUP_FIELD: at}, mode=UpdateMode.MERGE
            )
        except ResourceNotFoundError:
            return False
        return True

    def find_session(self, call_id: str) -> dict[str, Any] | None:
        try:
            day = self.sessions.get_entity(INDEX_PREFIX + call_id, "day")["day"]
            return session_view(self.sessions.get_entity(day, call_id))
        except ResourceNotFoundError:
            return None

    def ended_slots(self, first_day: str, last_day: str) -> set[str]:
        """The active-call slots named by calls of these days that have ended (limits' reconciliation);
        a call a successor continues handed its slot on, and is left out."""
        flt = (
            f"PartitionKey ge '{_escape(first_day)}' and PartitionKey le '{_escape(last_day)}' "
            "and state eq 'ended' and slot gt ''"
        )
        try:
            rows = self.sessions.query_entities(flt, select=["slot", "continued_by"])
            return {str(r["slot"]) for r in rows if r.get("slot") and not r.get("continued_by")}
        except ResourceNotFoundError:  # no call archived yet
            return set()

    def claim_continuation(self, call_id: str, marker: str) -> bool:
        """Mark a call as being continued (`continued_by`), only if no other successor has: the
        write is conditional on the row as read, so two concurrent continuations cannot both win."""
        try:
            day = self.sessions.get_entity(INDEX_PREFIX + call_id, "day")["day"]
            row = self.sessions.get_entity(day, call_id)
        except ResourceNotFoundError:
            return False
        if row.get("continued_by"):
            return False
        try:
            self.sessions.update_entity(
                {"PartitionKey": day, "RowKey": call_id, "continued_by": marker},
                mode=UpdateMode.MERGE,
                etag=row.metadata["etag"],
                match_condition=MatchConditions.IfNotModified,
            )
        except (ResourceModifiedError, ResourceNotFoundError):
            return False
        return True

    def sessions_on(self, day: str) -> list[dict[str, Any]]:
        return [session_view(r) for r in self.sessions.query_entities(f"PartitionKey eq '{_escape(day)}'")]

    # ---- ranges, pages and deletion (the audit tools and retention) ------------------------------
    def session_page(
        self, first_day: str, last_day: str, page_size: int = 100, token: Any = None
    ) -> tuple[list[dict[str, Any]], Any]:
        """One page of the session rows of days first_day..last_day (YYYYMMDD, both included), in
        day then call-id order, and the service's continuation token for the next page (None: done).

        Index partitions (`idx-...`) sort after every digit, so the day range never includes them.
        """
        flt = f"PartitionKey ge '{_escape(first_day)}' and PartitionKey le '{_escape(last_day)}'"
        pages = self.sessions.query_entities(flt, results_per_page=page_size).by_page(continuation_token=token)
        page: list[Mapping[str, Any]] = list(next(pages, []))
        return [session_view(r) for r in page], getattr(pages, "continuation_token", None) or None

    def sessions_between(self, first_day: str, last_day: str) -> Iterator[dict[str, Any]]:
        token = None
        while True:
            rows, token = self.session_page(first_day, last_day, 1000, token)
            yield from rows
            if not token:
                return

    # A deletion, once begun, is always finished: `begin_delete` records it in the `purging`
    # partition (how the next retention run finds it, whatever the setting is by then) and marks
    # the session row (how every reader knows its events may be partly gone), before any row goes.
    def begin_delete(self, call_id: str, day: str, since: str) -> None:
        self.sessions.upsert_entity(
            {"PartitionKey": PURGE_PARTITION, "RowKey": call_id, "day": day, "started_at": since},
            mode=UpdateMode.MERGE,
        )
        try:  # update, never upsert: a session row already deleted must not come back as a stub
            self.sessions.update_entity(
                {"PartitionKey": day, "RowKey": call_id, PURGE_FIELD: since}, mode=UpdateMode.MERGE
            )
        except ResourceNotFoundError:
            pass

    def delete_event_rows(self, call_id: str, batch: int = 100, max_batches: int | None = None) -> int:
        """Delete a call's event rows in transactions of `batch` (at most `max_batches` of them)."""
        deleted = batches = 0
        while max_batches is None or batches < max_batches:
            keys = self._event_keys(call_id, batch)
            if not keys:
                break
            self.events.submit_transaction([("delete", {"PartitionKey": call_id, "RowKey": k}) for k in keys])
            deleted += len(keys)
            batches += 1
        return deleted

    def delete_call(self, call_id: str, day: str, since: str, batch: int = 100) -> int:
        """Delete a whole call: mark it, delete its event rows, then its session row, its index row
        and the mark. Every step may be repeated, so a run cut short anywhere is finished by calling
        this again (`pending_deletions` lists such calls). Returns the event rows deleted."""
        self.begin_delete(call_id, day, since)
        deleted = self.delete_event_rows(call_id, batch)
        # the session row before the index row: once it is gone no reader finds the call at all
        for pk, rk in ((day, call_id), (INDEX_PREFIX + call_id, "day"), (PURGE_PARTITION, call_id)):
            try:
                self.sessions.delete_entity(pk, rk)
            except ResourceNotFoundError:
                pass
        return deleted

    def pending_deletions(self) -> list[dict[str, Any]]:
        """Deletions begun and not finished: {"call_id", "day", "started_at"} each."""
        rows = self.sessions.query_entities(f"PartitionKey eq '{PURGE_PARTITION}'")
        return [{"call_id": r["RowKey"], "day": r.get("day"), "started_at": r.get("started_at")} for r in rows]

    def _event_keys(self, call_id: str, limit: int) -> list[str]:
        pages = self.events.query_entities(
            f"PartitionKey eq '{_escape(call_id)}'", select=["RowKey"], results_per_page=limit
        ).by_page()
        return [r["RowKey"] for r in next(pages, [])]


def session_view(row: Mapping[str, Any]) -> dict[str, Any]:
    """A session row with split text properties joined back and JSON properties decoded."""
    out = {k: v for k, v in row.items() if not _is_chunk(k)}
    for name in LEGACY_TRANSCRIPTS:  # only rows written before the words moved to the events
        if name in row:
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
    return bool(base) and tail.isdigit() and base in LEGACY_TRANSCRIPTS


def _is_conflict(exc: Exception) -> bool:
    if isinstance(exc, ResourceExistsError):
        return True
    code = getattr(exc, "error_code", None) or ""
    return "EntityAlreadyExists" in str(code) or "EntityAlreadyExists" in str(exc)
