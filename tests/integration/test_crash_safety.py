"""Crash safety: a process killed with SIGKILL mid-call loses no archived row and writes none twice.

1. The local host is killed while its listener archives a live call; the queue message comes back
   when its lease runs out, a restarted host (same settings) resumes the call as a redelivery, and
   the archive marks the gap.
2. The listener's process dies exactly between an events-table write and the session-row update
   (a real child process that SIGKILLs itself there), twice; the redelivered listener puts the
   session row right.
3. A conversation's successor call: its listener dies after the service's word on two of the six
   replayed items is archived; the redelivered listener sends only the four the archive does not
   show, and each replayed item is archived once.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from collections import Counter

import requests
from azure.storage.queue import QueueClient, TextBase64DecodePolicy

from local.processes import free_port, start_group, stop_group
from local.testing.calls import end_and_wait, script, start_recorded_call
from local.testing.host_process import PASS_THROUGH, ROOT, gateway_settings, wait_until
from realtime_gateway.archive.codec import EventRecord
from realtime_gateway.archive.store import Archive
from realtime_gateway.archive.tables import table_service_from_env
from realtime_gateway.archive.turns import turn_text
from realtime_gateway.audit import verify_call
from realtime_gateway.core.message import CallMessage
from realtime_gateway.listener import replay
from realtime_gateway.listener.handler import handle_call_message
from realtime_gateway.services import Services
from realtime_gateway.settings import load_settings

LEASE_SECONDS = 5  # the local host's message lease (the real host's is 10 min): back soon after a kill
BURST_TURNS = 60  # ~2,300 events: the listener is still writing them when the host dies


def _archive(settings: dict, azurite) -> Archive:
    svc = table_service_from_env({"AzureWebJobsStorage": azurite.connection_string})
    return Archive(svc, settings["ARCHIVE_EVENTS_TABLE"], settings["ARCHIVE_SESSIONS_TABLE"])


def _info(emulator_url: str, call_id: str) -> dict:
    return requests.get(f"{emulator_url}/_emulator/calls/{call_id}", timeout=10).json()


def _session(archive: Archive, call_id: str) -> dict:
    return archive.find_session(call_id) or {}


def _wait_turns(archive: Archive, call_id: str, turns: int) -> None:
    wait_until(
        lambda: (_session(archive, call_id).get("counts") or {}).get("response.done") == turns,
        30,
        0.05,
        f"{turns} turns in the session row",
    )


def _resumed(archive: Archive, call_id: str, attached_before: str):
    """The session row once a later listener attached (its urgent update follows its gap row)."""
    session = _session(archive, call_id)
    return session.get("attached_at", "") > attached_before and session


def _check_archive(archive: Archive, call_id: str, survived: list[tuple[int, str, str, str]], gaps: int):
    """What a crash must not break: rows before it unchanged, no duplicate, every gap marked right
    after the rows that survived, the session row agreeing with the rows, the chain verifying."""
    events: list[EventRecord] = list(archive.read_events(call_id))
    assert [e.seq for e in events] == list(range(len(events)))
    ids = [e.event_id for e in events]
    assert len(set(ids)) == len(ids), "an event was archived twice"
    assert [(e.seq, e.event_id, e.hash) for e in events[: len(survived)]] == [(s, i, h) for s, i, h, _ in survived]
    gap_rows = [e for e in events if e.event_type == "listener.gap"]
    assert [json.loads(e.payload)["reason"] for e in gap_rows] == ["redelivered"] * gaps
    assert events[len(survived)].event_type == "listener.gap"  # the next row after the crash says so

    session = _session(archive, call_id)
    service = [e for e in events if e.source == "service"]
    assert (session["state"], session["end_reason"]) == ("ended", "ended")
    assert session["events"] == len(service)
    assert session["counts"] == dict(Counter(e.event_type for e in service))
    assert (session["head_seq"], session["head_hash"]) == (events[-1].seq, events[-1].hash)
    assert session["gaps"] == gaps
    turns = [t for e in service if (t := turn_text(e.event_type, e.event()))]
    # the row counts the turns once each, across the crash (the words stay in the event rows)
    assert session["user_turns"] == sum(who == "user" for who, _ in turns) > 0
    assert session["assistant_turns"] == sum(who == "assistant" for who, _ in turns) > 0
    report = verify_call(archive, call_id)
    assert report.ok, report.problems
    return events, session


# --- 1. the host killed mid-call ------------------------------------------------------------------
def test_killed_host_redelivers_and_the_listener_resumes_the_call(gateway_stack_factory, host_factory, azurite):
    stack = gateway_stack_factory(LOCAL_QUEUE_LEASE_SECONDS=LEASE_SECONDS)
    settings, emu = stack.settings, stack.emulator.url
    archive = _archive(settings, azurite)
    call_id = start_recorded_call(emu, azurite.connection_string, settings["LISTENER_QUEUE"], archive)
    attached_first = _session(archive, call_id)["attached_at"]
    script(emu, call_id, 2)
    _wait_turns(archive, call_id, 2)
    base = len(archive.event_index(call_id))

    # a burst of turns, not awaited: kill the host's whole group while its listener writes them
    requests.post(
        f"{emu}/_emulator/calls/{call_id}/script", params={"wait": "0"}, json={"responses": BURST_TURNS}, timeout=10
    ).raise_for_status()
    wait_until(lambda: len(archive.event_index(call_id)) > base + 20, 30, 0.02, "the burst being archived")
    assert "redelivered" not in stack.host.logs  # the lease was renewed: one listener on the call so far
    os.killpg(stack.host.process.pid, signal.SIGKILL)
    killed = time.monotonic()
    assert stack.host.process.wait(10) == -signal.SIGKILL

    survived = archive.event_index(call_id)
    at_kill = _session(archive, call_id)
    # the burst goes on with nobody listening; let it finish so the later turns stand apart
    wait_until(lambda: _info(emu, call_id)["responses"] == 2 + BURST_TURNS, 60, 0.1, "the burst's end")
    emitted = _info(emu, call_id)["events"]
    assert len(survived) - 1 < emitted  # (- session.created) the kill came before the burst was archived

    q = QueueClient.from_connection_string(
        azurite.connection_string, settings["LISTENER_QUEUE"], message_decode_policy=TextBase64DecodePolicy()
    )
    back = wait_until(
        lambda: [m for m in q.peek_messages(max_messages=32) if json.loads(m.content)["call_id"] == call_id],
        LEASE_SECONDS * 5,
        0.1,
        "the message back on the queue",
    )
    returned = time.monotonic() - killed
    assert back[0].dequeue_count == 1  # taken once, never settled: the dead host neither deleted nor poisoned it

    port = int(stack.url.rsplit(":", 1)[1])
    host = host_factory(ROOT, settings, static_dir=ROOT / "static_web", port=port)
    host.wait_for_log(f"call {call_id}: message redelivered (try 2)", timeout=30)
    wait_until(lambda: _resumed(archive, call_id, attached_first), 30, 0.05, "the resumed listener attached")
    resumed = time.monotonic() - killed

    script(emu, call_id, 2)
    end_and_wait(emu, call_id, archive)
    done = host.wait_for_log(f"call {call_id}: listener 0 done", timeout=30)
    line = next(x for x in done.splitlines() if f"call {call_id}: listener 0 done" in x)
    duplicates_skipped = int(line.split(" duplicates skipped")[0].rsplit(" ", 1)[1])

    events, session = _check_archive(archive, call_id, survived, gaps=1)
    later = events[len(survived) :]
    assert [e.event_type for e in later].count("response.done") == 2  # the turns after the restart
    assert later[1].event_type == "session.created"  # the resumed listener's own socket
    # settled this time: deleted (the count includes invisible messages)
    wait_until(lambda: q.get_queue_properties().approximate_message_count == 0, 15, 0.1, "the message deleted")
    print(
        f"\nhost SIGKILLed mid-call: {len(survived)} events archived before the kill "
        f"({len(survived) - 1 - at_kill['head_seq']} past the session row's head), "
        f"{len(events) - len(survived)} after "
        f"(gap row + {len(later) - 1} events), {len(events)} in all; duplicates 0 "
        f"(ids unique; resumed listener skipped {duplicates_skipped}); gap rows 1 (redelivered); "
        f"{emitted - (len(survived) - 1)} service events sent while no listener was recording; "
        f"message visible again {returned:.1f} s after the kill (lease {LEASE_SECONDS} s), "
        f"resumed listener attached {resumed:.1f} s after it (host restart {host.startup_seconds:.1f} s); "
        f"verify ok, session row: {session['events']} events, head_seq {session['head_seq']}"
    )


# --- 2. the listener's process killed between the table write and the session update -------------
# A listener in its own process, as the host runs it (handle_call_message, settings from the
# environment), whose Archive kills the process at the first session-row update that follows an
# events-table write made once `arm` exists: the rows are committed, the session row is not.
CHILD = r"""
import os, signal, sys
from realtime_gateway.listener.handler import handle_call_message
from realtime_gateway.services import Services
from realtime_gateway.settings import load_settings

body, dequeue_count, arm = sys.argv[1], int(sys.argv[2]), sys.argv[3]
process = Services(load_settings())
archive = process.archive
write_entities, update_session = archive.write_entities, archive.update_session
written = []

def write(entities):
    write_entities(entities)
    if os.path.exists(arm):
        written.append(max(int(e["seq"]) for e in entities if "seq" in e))

def update(call_id, day, fields):
    if written:
        print(f"SIGKILL: rows through seq {written[-1]} written, session row not updated", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    update_session(call_id, day, fields)

archive.write_entities, archive.update_session = write, update
handle_call_message(body, send_handover=print, send_poison=print, dequeue_count=dequeue_count, services=process)
print("the listener returned", flush=True)
"""


def _run_child(env: dict, args: list[str], while_running=None, code: str = CHILD) -> str:
    """`code` run with `args` in a child process that must die by SIGKILL; its output."""
    child_env = {k: os.environ[k] for k in PASS_THROUGH if k in os.environ}
    child_env.update({"PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1"}, **env)
    child = start_group([sys.executable, "-c", code, *args], child_env, ROOT)
    try:
        if while_running is not None:
            while_running()
        out, _ = child.communicate(timeout=60)
    finally:
        if child.poll() is None:
            stop_group(child, grace=5)
    assert child.returncode == -signal.SIGKILL, f"exit {child.returncode}:\n{out}"
    assert "SIGKILL: rows through seq" in out, out
    return out


def _lagging(archive: Archive, call_id: str) -> tuple[list[tuple[int, str, str, str]], int]:
    """The rows after a death, and how many the session row does not cover."""
    index = archive.event_index(call_id)
    head = _session(archive, call_id).get("head_seq", -1)
    assert index[-1][0] > head, "the session row covers every row: the death was not between the two writes"
    return index, index[-1][0] - head


def _message(call_id: str, now: float, **more) -> CallMessage:
    return CallMessage(
        call_id=call_id,
        started_at=now,
        deadline=now + 600,
        origin=None,
        request_id=f"req-{call_id[-8:]}",
        model="gpt-realtime",
        voice="marin",
        **more,
    )


def _say(emulator_url: str, call_id: str, text: str) -> None:
    requests.post(
        f"{emulator_url}/_emulator/calls/{call_id}/script", json={"responses": 1, "text": text}, timeout=60
    ).raise_for_status()


def _listen(body: str, process: Services, dequeue_count: int) -> tuple[threading.Thread, dict]:
    box: dict = {}

    def run() -> None:
        try:
            box["result"] = handle_call_message(
                body, send_handover=print, send_poison=print, dequeue_count=dequeue_count, services=process
            )
        except BaseException as exc:  # surfaced by the test
            box["error"] = exc

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, box


def test_listener_killed_between_table_write_and_session_update(emulator, azurite, monkeypatch, tmp_path):
    env = gateway_settings(emulator, azurite, free_port())
    for name in ("IDENTITY_ENDPOINT", "IDENTITY_HEADER"):  # the in-test listener's managed identity
        monkeypatch.setenv(name, env[name])
    archive = _archive(env, azurite)
    emu = emulator.url
    call_id = requests.post(f"{emu}/_emulator/calls", timeout=10).json()["call_id"]
    body = _message(call_id, time.time()).to_json()
    arm = tmp_path / "arm"

    def two_turns_then_arm() -> None:
        wait_until(lambda: _session(archive, call_id).get("attached_at"), 30, 0.05, "child attached")
        script(emu, call_id, 2)
        _wait_turns(archive, call_id, 2)
        arm.touch()
        script(emu, call_id, 1)  # its first rows are the write the child dies after

    # the first try dies after writing service events (the call's third turn)
    out1 = _run_child(env, [body, "1", str(arm)], two_turns_then_arm)
    survived1, lag1 = _lagging(archive, call_id)
    attached_first = _session(archive, call_id)["attached_at"]
    # the second try (redelivered) dies after writing its gap row, before its session update
    out2 = _run_child(env, [body, "2", str(arm)])
    survived2, lag2 = _lagging(archive, call_id)
    assert [e.event_type for e in archive.read_events(call_id, after_seq=survived1[-1][0])] == ["listener.gap"]

    # the third try, as the host runs it, in this process: it resumes and finishes the call
    t, box = _listen(body, Services(load_settings(env)), 3)
    wait_until(lambda: _resumed(archive, call_id, attached_first), 30, 0.05, "the third try attached")
    script(emu, call_id, 2)
    requests.post(f"{emu}/_emulator/calls/{call_id}/end", timeout=10)
    t.join(60)
    assert "error" not in box, box.get("error")
    assert box["result"].outcome == "ended" and box["result"].duplicates == 0

    events, session = _check_archive(archive, call_id, survived2, gaps=2)
    later = events[len(survived2) :]
    assert [e.event_type for e in later].count("response.done") == 2
    print(
        f"\nlistener process SIGKILLed between table write and session update, twice: "
        f"1st death ({out1.strip().splitlines()[-1]}) left {lag1} rows past the session row, "
        f"2nd death ({out2.strip().splitlines()[-1]}) left {lag2}; "
        f"events archived: {len(survived1)} after the 1st death, {len(survived2)} after the 2nd, "
        f"{len(events)} in all; duplicates 0; gap rows 2 (redelivered); session row after the 3rd try: "
        f"state {session['state']}, {session['events']} service events, gaps {session['gaps']}, "
        f"head_seq {session['head_seq']} = last row; verify ok"
    )


# --- 3. a successor's listener killed in the middle of its replay -----------------------------------
CHILD_MID_REPLAY = r"""
import os, signal, sys
from realtime_gateway.listener.handler import handle_call_message
from realtime_gateway.services import Services
from realtime_gateway.settings import load_settings

body, keep = sys.argv[1], int(sys.argv[2])
process = Services(load_settings())
archive = process.archive
write_entities = archive.write_entities
added = 0

def write(entities):
    global added
    for n, entity in enumerate(entities):
        if entity.get("event_type") == "conversation.item.added":
            added += 1
            if added == keep:  # the service's word for this replayed item is the last row that lands
                write_entities(entities[: n + 1])
                print(f"SIGKILL: rows through seq {entity['seq']} written, {keep} replayed items archived", flush=True)
                os.kill(os.getpid(), signal.SIGKILL)
    write_entities(entities)

archive.write_entities = write
handle_call_message(body, send_handover=print, send_poison=print, dequeue_count=1, services=process)
print("the listener returned", flush=True)
"""


def test_successor_listener_killed_mid_replay_resumes_without_duplicates(emulator, azurite, monkeypatch):
    env = gateway_settings(emulator, azurite, free_port())
    for name in ("IDENTITY_ENDPOINT", "IDENTITY_HEADER"):  # the in-test listener's managed identity
        monkeypatch.setenv(name, env[name])
    archive = _archive(env, azurite)
    process = Services(load_settings(env))
    emu = emulator.url
    now = time.time()

    # the first call of the conversation: three turns, archived by its own listener
    call1 = requests.post(f"{emu}/_emulator/calls", timeout=10).json()["call_id"]
    t, box = _listen(_message(call1, now).to_json(), process, 1)
    wait_until(lambda: _session(archive, call1).get("attached_at"), 30, 0.05, "call 1 attached")
    said = ["My name is Ada", "I live in Lyon", "I like green tea"]
    for text in said:
        _say(emu, call1, text)
    _wait_turns(archive, call1, 3)
    requests.post(f"{emu}/_emulator/calls/{call1}/end", timeout=10)
    t.join(60)
    assert "error" not in box, box.get("error")
    history = [m["item"]["id"] for m in replay.items(replay.history(archive, call1))]
    assert len(history) == 6  # three turns, each the user's words and the reply

    # its successor: the first listener dies once the service's word on two replayed items is archived
    call2 = requests.post(f"{emu}/_emulator/calls", timeout=10).json()["call_id"]
    body = _message(call2, now, continues=call1, conversation_id=call1, conversation_started_at=now).to_json()
    out = _run_child(env, [body, "2"], code=CHILD_MID_REPLAY)
    assert "2 replayed items archived" in out, out
    assert replay.already_added(archive, call2) == set(history[:2])
    assert not _session(archive, call2).get("history_ready_at")

    # the message comes back: the second try sends only what the archive does not show as added
    t, box = _listen(body, process, 2)
    ready = wait_until(lambda: _session(archive, call2).get("history_ready_at"), 30, 0.05, "history ready")
    _say(emu, call2, "what did I say first?")
    wait_until(
        lambda: any(
            "You first said: My name is Ada" in text
            for who, text in (turn_text(e.event_type, e.event()) or ("", "") for e in archive.read_events(call2))
            if who == "assistant"
        ),
        30,
        0.05,
        "the successor's answer from the replayed history",
    )
    requests.post(f"{emu}/_emulator/calls/{call2}/end", timeout=10)
    t.join(60)
    assert "error" not in box, box.get("error")
    assert box["result"].outcome == "ended" and box["result"].duplicates == 0

    events = list(archive.read_events(call2))
    marks = [json.loads(e.payload) for e in events if e.event_type == "listener.replay"]
    assert [(m["items"], m["sent"]) for m in marks] == [(6, 6), (6, 4)]  # the second try skipped two
    added = [
        (e.event() or {})["item"]["id"]
        for e in events
        if e.event_type == "conversation.item.added"
        and str(((e.event() or {}).get("item") or {}).get("id", "")).startswith("replay_")
    ]
    assert sorted(added) == history and len(set(added)) == len(added)  # each replayed item once
    model = requests.get(f"{emu}/_emulator/calls/{call2}/conversation", timeout=10).json()["items"]
    assert [i["id"] for i in model if i["id"].startswith("replay_")] == history
    assert [json.loads(e.payload)["reason"] for e in events if e.event_type == "listener.gap"] == ["redelivered"]
    assert verify_call(archive, call2).ok
    print(
        f"\nsuccessor's listener SIGKILLed mid-replay ({out.strip().splitlines()[-1]}); the second try sent "
        f"{marks[1]['sent']} of {marks[1]['items']}, history ready at {ready}; each of the 6 replayed items "
        f"archived once; the model answered from call 1's words; verify ok"
    )
