"""The listener against the realtime emulator's sideband and Azurite's tables, called directly
(its fixtures and helpers: tests/fixtures/listener.py)."""

from __future__ import annotations

import json
import time
import uuid

import requests

from local.testing.host_process import wait_until
from realtime_gateway.archive.turns import call_turns
from realtime_gateway.audit import verify_call
from realtime_gateway.core.events import parse
from realtime_gateway.listener.handler import handle_call_message
from tests.fixtures.listener import (
    all_archived,
    emulator_events,
    end_call,
    listener,
    message,
    new_call,
    run_in_thread,
    script,
    sideband_connections,
    wait_attached,
)


def test_scripted_call_archives_every_event_in_order(emulator, archive, upstream, settings):
    call_id = new_call(emulator)
    msg = message(call_id)
    t, box = run_in_thread(listener(msg, archive, upstream, settings))
    wait_attached(archive, call_id)
    script(emulator, call_id, 12)
    end_call(emulator, call_id)
    t.join(60)
    assert "error" not in box, box.get("error")
    result = box["result"]
    assert (result.outcome, result.end_reason) == ("ended", "ended")

    events = list(archive.read_events(call_id))
    assert len(events) >= 200, len(events)
    assert len(events) == emulator_events(emulator, call_id) + 1  # + session.created
    assert [e.seq for e in events] == list(range(len(events)))
    assert events[0].event_type == "session.created"
    ids = [e.event_id for e in events]
    assert len(set(ids)) == len(ids)
    assert [e.received_at for e in events] == sorted(e.received_at for e in events)
    assert all(json.loads(e.payload)["event_id"] == e.event_id for e in events)

    session = archive.find_session(call_id)
    assert session["state"] == "ended" and session["end_reason"] == "ended"
    assert session["events"] == len(events)
    counts = {}
    for e in events:
        counts[e.event_type] = counts.get(e.event_type, 0) + 1
    assert session["counts"] == counts
    assert session["head_hash"] == events[-1].hash and session["head_seq"] == events[-1].seq
    assert session["origin"] == "http://127.0.0.1:9" and session["principal_id"] == "u-1"
    assert session["PartitionKey"] == time.strftime("%Y%m%d", time.gmtime(msg.started_at))
    assert session["attach_delay_ms"] >= 0
    assistant = [
        json.loads(e.payload).get("transcript") or json.loads(e.payload).get("text")
        for e in events
        if e.event_type in ("response.output_audio_transcript.done", "response.output_text.done")
    ]
    words = call_turns((e.event_type, e.event()) for e in events)  # the words, read from the events
    assert [t.text for t in words if t.role == "assistant"] == assistant and len(assistant) == 12
    assert (session["user_turns"], session["assistant_turns"]) == (12, 12)
    user_items = [
        e
        for e in events
        if e.event_type == "conversation.item.added" and json.loads(e.payload)["item"]["role"] == "user"
    ]
    assert len(user_items) == 12
    assert [t.text for t in words if t.role == "user"] == [f"Scripted question {n}" for n in range(1, 13)]
    assert call_id in [s["call_id"] for s in archive.sessions_on(session["PartitionKey"])]
    assert verify_call(archive, call_id).ok


def test_time_box_hands_over_and_continuation_archives_the_rest(emulator, archive, upstream, settings):
    call_id = new_call(emulator)
    msg = message(call_id)
    handed = []
    first = listener(msg, archive, upstream, settings, time_box=2.5, handover=handed.append)
    t, box = run_in_thread(first)
    wait_attached(archive, call_id)
    script(emulator, call_id, 3)
    t.join(30)
    assert box["result"].outcome == "handed_over" and handed == [msg.continued()]
    assert archive.find_session(call_id)["state"] == "attached"  # the call goes on

    second = listener(handed[0], archive, upstream, settings, time_box=30)
    t2, box2 = run_in_thread(second)
    end = time.monotonic() + 10
    while archive.find_session(call_id).get("continuations") != 1 and time.monotonic() < end:
        time.sleep(0.05)
    wait_attached(archive, call_id)
    script(emulator, call_id, 3)
    end_call(emulator, call_id)
    t2.join(30)
    assert box2["result"].end_reason == "ended"
    events = list(archive.read_events(call_id))
    types = [e.event_type for e in events]
    assert types.count("listener.handover") == 1 and types.count("listener.gap") == 1
    assert types.count("session.created") == 2  # one per sideband socket
    assert types.count("response.done") == 6  # both listeners' turns, all archived
    assert [e.seq for e in events] == list(range(len(events)))
    # everything the emulator sent while a listener was attached is archived (+1 session.created per socket)
    service = [e for e in events if e.source == "service"]
    assert len(service) == emulator_events(emulator, call_id) + 2
    report = verify_call(archive, call_id)
    assert report.ok, report.problems
    session = archive.find_session(call_id)
    assert session["continuations"] == 1 and session["gaps"] == 1 and session["end_reason"] == "ended"


def test_dropped_socket_reconnects_and_the_gap_is_marked(emulator, archive, upstream, settings):
    call_id = new_call(emulator)
    emulator.set_fault("sideband", drop_after=5, times=1)
    sidebands = sideband_connections(emulator)
    t, box = run_in_thread(listener(message(call_id), archive, upstream, settings))
    wait_attached(archive, call_id)
    script(emulator, call_id, 2)  # the first socket dies after 5 events
    wait_until(lambda: sideband_connections(emulator) >= sidebands + 2, 10, 0.05, what="the listener reconnected")
    script(emulator, call_id, 2)
    end_call(emulator, call_id)
    t.join(30)
    assert "error" not in box, box.get("error")
    events = list(archive.read_events(call_id))
    gaps = [json.loads(e.payload) for e in events if e.event_type == "listener.gap"]
    assert len(gaps) == 1 and gaps[0]["reason"] == "socket dropped" and gaps[0]["until"]
    assert [e.event_type for e in events].count("session.created") == 2
    session = archive.find_session(call_id)
    assert session["gaps"] == 1 and session["end_reason"] == "ended"
    assert verify_call(archive, call_id).ok


def test_follows_a_same_origin_redirect(emulator, archive, upstream, settings):
    call_id = new_call(emulator)
    emulator.set_fault("sideband", redirect=True, times=1)
    t, box = run_in_thread(listener(message(call_id), archive, upstream, settings))
    wait_attached(archive, call_id)
    end_call(emulator, call_id)
    t.join(30)
    assert box["result"].end_reason == "ended"
    assert [e.event_type for e in archive.read_events(call_id)] == ["session.created"]


def test_max_duration_hangs_up_the_call(emulator, archive, upstream, settings):
    call_id = new_call(emulator)
    msg = message(call_id, max_seconds=2)
    hangups = emulator.stats()["hangups"]
    t, box = run_in_thread(listener(msg, archive, upstream, settings))
    t.join(30)
    assert box["result"].end_reason == "limit"
    assert emulator.stats()["hangups"] == hangups + 1
    info = requests.get(f"{emulator.url}/_emulator/calls/{call_id}", timeout=10).json()
    assert info["state"] == "ended"
    session = archive.find_session(call_id)
    assert session["state"] == "ended" and session["end_reason"] == "limit" and session["hangup_requested_at"]


def test_strict_mode_hangs_up_a_call_it_cannot_attach_to(emulator, archive, upstream, settings):
    call_id = new_call(emulator)
    emulator.set_fault("sideband", status=503, times=0)
    lst = listener(message(call_id), archive, upstream, settings, strict=True, attach_limit=1.5)
    result = lst.run()
    emulator.clear_faults()
    assert (result.outcome, result.end_reason) == ("ended", "hangup")
    session = archive.find_session(call_id)
    assert session["state"] == "ended" and "not recorded" in session["end_detail"]
    assert not session.get("attached_at")
    assert requests.get(f"{emulator.url}/_emulator/calls/{call_id}", timeout=10).json()["state"] == "ended"


def test_redelivered_message_adds_no_duplicates(emulator, archive, upstream, settings):
    call_id = new_call(emulator)
    msg = message(call_id)
    t, box = run_in_thread(listener(msg, archive, upstream, settings, time_box=3))
    wait_attached(archive, call_id)
    script(emulator, call_id, 2)
    t.join(30)
    before = list(archive.read_events(call_id))
    # the same message again (the host redelivers it): the call has ended by now
    end_call(emulator, call_id)
    again = listener(msg, archive, upstream, settings).run()
    assert again.outcome == "ended"
    after = list(archive.read_events(call_id))
    assert [(e.seq, e.event_id, e.hash) for e in after] == [(e.seq, e.event_id, e.hash) for e in before]
    assert archive.find_session(call_id)["state"] == "ended"


def test_writer_resume_skips_events_already_archived(archive):
    """The writer side of exactly-once: the same event ids offered again are not archived twice."""
    from realtime_gateway.archive.writer import ArchiveWriter

    call_id = "rtc_" + uuid.uuid4().hex
    raw = [
        json.dumps({"type": "response.output_text.delta", "event_id": f"event_{i}", "delta": "x"}) for i in range(150)
    ]
    w = ArchiveWriter(archive, call_id, "20260101", {"state": "attached"}, flush_interval=0.1).start()
    for r in raw[:100]:
        w.event(parse(r), time.time())
    w.close({"state": "attached"})
    w2 = ArchiveWriter(archive, call_id, "20260101", {"state": "attached"}, listener=1, flush_interval=0.1).start()
    for r in raw:  # a replay of the first 100 and 50 new ones
        w2.event(parse(r), time.time())
    w2.close({"state": "ended"})
    assert w2.duplicates == 100
    events = list(archive.read_events(call_id))
    assert [e.event_id for e in events] == [f"event_{i}" for i in range(150)]
    assert verify_call(archive, call_id).ok
    assert archive.find_session(call_id)["events"] == 150


def test_event_over_64_kib_round_trips_whole(emulator, archive, upstream, settings):
    call_id = new_call(emulator)
    t, box = run_in_thread(listener(message(call_id), archive, upstream, settings))
    wait_attached(archive, call_id)
    script(emulator, call_id, 1, pad_bytes=300_000)
    end_call(emulator, call_id)
    t.join(30)
    events = list(archive.read_events(call_id))
    big = [e for e in events if len(e.payload) > 65_536]
    assert big, "no event over 64 KiB was archived"
    for e in big:
        parsed = json.loads(e.payload)
        assert parsed["event_id"] == e.event_id
    assert verify_call(archive, call_id).ok


def test_tampered_or_removed_row_is_detected(emulator, archive, upstream, settings):
    call_id = new_call(emulator)
    t, box = run_in_thread(listener(message(call_id), archive, upstream, settings))
    wait_attached(archive, call_id)
    script(emulator, call_id, 2)
    end_call(emulator, call_id)
    t.join(30)
    assert verify_call(archive, call_id).ok
    row = archive.events.get_entity(call_id, "0000000005")
    row["payload"] = row["payload"].replace('"type"', '"type" ', 1)
    archive.events.upsert_entity(row)
    report = verify_call(archive, call_id)
    assert not report.ok and any("0000000005" in p for p in report.problems)
    archive.events.delete_entity(call_id, "0000000005")
    report = verify_call(archive, call_id)
    assert not report.ok and any("missing" in p or "gap" in p for p in report.problems)


def test_queue_handler_rejects_malformed_message_once(archive, process):
    poisoned, handed = [], []
    assert (
        handle_call_message(
            b"{not json", send_handover=handed.append, send_poison=poisoned.append, dequeue_count=1, services=process
        )
        is None
    )
    assert poisoned == ["{not json"] and handed == []


def test_message_for_an_ended_call_completes_quietly(emulator, archive, process):
    call_id = new_call(emulator)
    end_call(emulator, call_id)
    handed = []
    result = handle_call_message(
        message(call_id).to_json(), send_handover=handed.append, send_poison=lambda _: None, services=process
    )
    assert result.outcome == "ended" and handed == []
    session = archive.find_session(call_id)
    assert session["state"] == "ended" and "before the listener attached" in session["end_detail"]


def test_failing_archive_fails_the_invocation_and_the_retry_resumes(emulator, archive, upstream, settings, monkeypatch):
    from realtime_gateway.archive.store import ArchiveError

    call_id = new_call(emulator)
    msg = message(call_id)
    t, box = run_in_thread(listener(msg, archive, upstream, settings))
    wait_attached(archive, call_id)
    turn = script(emulator, call_id, 1)
    wait_until(lambda: all_archived(archive, call_id, turn["events"]), 10, 0.05, what="the first turn archived")
    archived = len(list(archive.read_events(call_id)))
    real_write = archive.write_entities

    def down(entities):
        raise ConnectionError("table endpoint unreachable")

    monkeypatch.setattr(archive, "write_entities", down)
    script(emulator, call_id, 1)
    t.join(60)  # ~8 s of retries, then the invocation fails
    assert isinstance(box.get("error"), ArchiveError)
    monkeypatch.setattr(archive, "write_entities", real_write)
    # the host retries the same message (dequeue count 2): the call is still live
    t2, box2 = run_in_thread(listener(msg, archive, upstream, settings, redelivered=True))
    end = time.monotonic() + 10
    while len(list(archive.read_events(call_id))) <= archived and time.monotonic() < end:
        time.sleep(0.1)
    script(emulator, call_id, 1)
    end_call(emulator, call_id)
    t2.join(30)
    assert box2["result"].end_reason == "ended"
    events = list(archive.read_events(call_id))
    gaps = [json.loads(e.payload) for e in events if e.event_type == "listener.gap"]
    assert [g["reason"] for g in gaps] == ["redelivered"]
    assert len({e.event_id for e in events}) == len(events)
    assert [e.event_type for e in events].count("response.done") == 2  # turns 1 and 3; turn 2 was lost
    assert verify_call(archive, call_id).ok
