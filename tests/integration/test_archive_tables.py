"""The archive against Azurite: idempotent creates, conflicts, sessions by day and by id, failures.
(A storage setting without a connection is refused: tests/unit/test_settings.py.)"""

import json
import time
import uuid

import pytest
from azure.core.exceptions import ServiceRequestError

from local.testing.host_process import wait_until
from realtime_gateway.archive.codec import EventRecord, event_entities
from realtime_gateway.archive.store import Archive, ArchiveConflict, ArchiveError
from realtime_gateway.archive.tables import table_service_from_env
from realtime_gateway.archive.writer import ArchiveWriter
from realtime_gateway.audit import main as audit_main
from realtime_gateway.audit import verify_call
from realtime_gateway.core.events import parse


@pytest.fixture
def archive(azurite):
    svc = table_service_from_env({"AzureWebJobsStorage": azurite.connection_string})
    arc = Archive(svc, "ev" + uuid.uuid4().hex[:10], "se" + uuid.uuid4().hex[:10])
    arc.ensure_tables()
    return arc


def _events(n, prefix="event"):
    return [
        json.dumps({"type": "response.output_audio_transcript.delta", "event_id": f"{prefix}_{i}", "delta": f"w{i} "})
        for i in range(n)
    ]


def test_rewriting_the_same_rows_is_a_no_op_and_a_different_event_is_a_conflict(archive):
    rec = EventRecord(0, "e0", "t", "2026-01-01T00:00:00+00:00", "{}", "h0")
    rows = event_entities("rtc_a", rec)
    archive.write_entities(rows)
    archive.write_entities(rows)  # a retried transaction whose first commit went through
    assert [r.event_id for r in archive.read_events("rtc_a")] == ["e0"]
    other = event_entities("rtc_a", EventRecord(0, "e9", "t", "2026-01-01T00:00:00+00:00", "{}", "h9"))
    with pytest.raises(ArchiveConflict):
        archive.write_entities(other)
    assert [r.event_id for r in archive.read_events("rtc_a")] == ["e0"]  # not overwritten


def test_sessions_listable_by_day_and_found_by_id(archive):
    archive.open_session("rtc_d1", "20260102", {"state": "waiting"})
    archive.open_session("rtc_d2", "20260102", {"state": "waiting"})
    archive.open_session("rtc_d3", "20260103", {"state": "waiting"})
    # a second open (redelivery) keeps the original day and row
    again = archive.open_session("rtc_d1", "20260109", {"state": "waiting"})
    assert again["PartitionKey"] == "20260102"
    assert sorted(s["call_id"] for s in archive.sessions_on("20260102")) == ["rtc_d1", "rtc_d2"]
    assert archive.find_session("rtc_d3")["PartitionKey"] == "20260103"
    assert archive.find_session("rtc_nope") is None
    archive.update_session("rtc_d1", "20260102", {"user_transcript": "z" * 70_000})
    assert archive.find_session("rtc_d1")["user_transcript"] == "z" * 70_000


def test_writer_batches_and_flushes_within_a_second(archive):
    call_id = "rtc_" + uuid.uuid4().hex
    w = ArchiveWriter(archive, call_id, "20260101", {"state": "attached"}).start()
    for r in _events(3):
        w.event(parse(r), time.time())
    # no close: the periodic flush alone writes them, within the 1.2 s this test always allowed
    wait_until(lambda: len(list(archive.read_events(call_id))) == 3, 1.2, 0.05, what="3 rows flushed")
    w.close({"state": "ended"})


def test_writer_resumes_counts_from_rows_written_after_the_last_session_update(archive):
    call_id = "rtc_" + uuid.uuid4().hex
    w = ArchiveWriter(archive, call_id, "20260101", {"state": "attached"}).start()
    for r in _events(10):
        w.event(parse(r), time.time())
    w.close({"state": "attached"})
    archive.update_session(
        call_id,
        "20260101",
        {"head_seq": 3, "events": 4, "counts": json.dumps({"response.output_audio_transcript.delta": 4})},
    )  # as if a crash lost the later session updates
    w2 = ArchiveWriter(archive, call_id, "20260101", {}, listener=1).start()
    for r in _events(12):
        w2.event(parse(r), time.time())
    w2.close({"state": "ended"})
    assert w2.duplicates == 10
    session = archive.find_session(call_id)
    assert session["events"] == 12 and session["head_seq"] == 11
    assert verify_call(archive, call_id).ok


def test_persistent_write_failure_raises_so_the_queue_retries(archive, monkeypatch):
    call_id = "rtc_" + uuid.uuid4().hex
    w = ArchiveWriter(archive, call_id, "20260101", {"state": "attached"}, sleep=lambda s: None).start()
    w.ready.wait(10)

    def broken(entities):
        raise ServiceRequestError("storage unreachable")

    monkeypatch.setattr(archive, "write_entities", broken)
    w.event(parse(_events(1)[0]), time.time())
    with pytest.raises(ArchiveError, match="storage unreachable"):
        w.close({"state": "ended"})


def test_audit_command_lists_shows_verifies_and_renders(archive, azurite, tmp_path, capsys):
    call_id = "rtc_" + uuid.uuid4().hex
    w = ArchiveWriter(
        archive,
        call_id,
        "20260104",
        {"state": "attached", "origin": "https://app.example", "created_at": "2026-01-04T10:00:00+00:00"},
    ).start()
    w.event(
        parse(
            json.dumps(
                {
                    "type": "conversation.item.input_audio_transcription.completed",
                    "event_id": "u1",
                    "transcript": "<script>alert(1)</script> hello",
                }
            )
        ),
        time.time(),
    )
    for r in _events(5):
        w.event(parse(r), time.time())
    w.event(
        parse(json.dumps({"type": "response.output_audio_transcript.done", "event_id": "a1", "transcript": "hi"})),
        time.time(),
    )
    w.close({"state": "ended", "end_reason": "ended"})
    base = [
        "--connection-string",
        azurite.connection_string,
        "--events-table",
        archive.events.table_name,
        "--sessions-table",
        archive.sessions.table_name,
    ]
    assert audit_main(base + ["list", "--day", "20260104"]) == 0
    assert call_id in capsys.readouterr().out
    assert audit_main(base + ["show", call_id, "--events"]) == 0
    assert '"event_id": "u1"' in capsys.readouterr().out
    assert audit_main(base + ["verify", call_id]) == 0
    page = tmp_path / "call.html"
    assert audit_main(base + ["timeline", call_id, "-o", str(page)]) == 0
    html = page.read_text()
    assert "chain verified" in html and "5 × response.output_audio_transcript.delta" in html
    assert "<script>alert" not in html and "&lt;script&gt;" in html
    assert "http" not in html.split("<body>")[1].replace("https://app.example", "")  # self-contained
    row = archive.events.get_entity(call_id, "0000000002")
    archive.events.delete_entity(call_id, "0000000006")  # the last row: only the session head shows it
    assert audit_main(base + ["verify", call_id]) == 1
    assert "chain head" in capsys.readouterr().out
    assert row
