"""The fault matrix of the listener: the sideband connect and the sideband mid-call (the emulator's
`sideband` faults), and the archive's table writes (a fault proxy in front of Azurite's tables),
each under each fault that applies. For every case the outcome is the documented one: the listener
retries, or hands the call to the queue's retry, and what the archive then shows is exact: every
event once, in a chain that verifies, any loss marked as a gap. The matrix is printed (`-s`) and
kept in the README; the run is also the secret-hygiene sweep of the listener's logs and rows."""

from __future__ import annotations

import json
import logging
import re
import time
import uuid

import pytest

from local.processes import free_port
from local.testing.fault_proxy import FaultProxy
from realtime_gateway.archive.store import Archive, ArchiveError
from realtime_gateway.archive.tables import table_service_from_env
from realtime_gateway.audit import verify_call
from tests.fixtures.listener import (
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

ROWS: list[tuple[str, str, str, str, str]] = []
SEEN: list[str] = []  # every log line and archived row of the run
ISSUED: set[str] = set()
SECRET = re.compile(r"(?:entra|ek)_[0-9a-f]{48}")  # the emulator's Entra tokens and ephemeral keys

SIDEBAND_CONNECT = {
    "401": {"status": 401},
    "403": {"status": 403},
    "404": {"status": 404},
    "429 Retry-After: 1": {"status": 429, "retry_after": 1},
    "500": {"status": 500},
    "503": {"status": 503},
    "malformed (200, no upgrade)": {"status": 200, "body": "<html>not a socket</html>", "content_type": "text/html"},
    "redirect (same origin)": {"redirect": True},
    "timeout (11 s > the 10 s handshake limit)": {"delay": 11},
}
TABLE_WRITE = {
    "refused connection (2 s)": ("refuse", {"seconds": 2}),
    "connection reset": ("reset", {}),
    "timeout (3 s > read timeout 2 s)": ("delay", {"seconds": 3}),
    "401": ("status", {"status": 401}),
    "403": ("status", {"status": 403}),
    "404": ("status", {"status": 404}),
    "429 Retry-After: 1": ("status", {"status": 429, "retry_after": 1}),
    "500": ("status", {"status": 500}),
    "503": ("status", {"status": 503}),
    "malformed body": ("malformed", {}),
    "redirect (307 to itself)": ("redirect", {}),
    "503 for good (past the writer's 10 s)": ("status", {"status": 503, "times": 0}),
}


@pytest.fixture
def swept(caplog, upstream):
    caplog.set_level(logging.DEBUG)
    ISSUED.update(SECRET.findall(json.dumps(dict(upstream.headers()))))  # the listener's bearer token
    yield
    SEEN.append(caplog.text)


@pytest.fixture(scope="module")
def proxy(azurite):
    target = azurite.connection_string.split("TableEndpoint=")[1].split(";")[0].rsplit("/", 1)[0]
    p = FaultProxy(target).start()
    yield p
    p.stop()


@pytest.fixture
def archives(azurite, proxy):
    """(the listener's archive, through the proxy; the auditor's view of the same tables, direct)."""
    conn = re.sub(r"TableEndpoint=http://[^/;]+", f"TableEndpoint={proxy.url}", azurite.connection_string)
    tables = "ev" + uuid.uuid4().hex[:10], "se" + uuid.uuid4().hex[:10]
    # a short read timeout, so that the timeout case costs seconds, not the default 30
    proxied = Archive(table_service_from_env({"AzureWebJobsStorage": conn}, read_timeout=2), *tables)
    direct = Archive(table_service_from_env({"AzureWebJobsStorage": azurite.connection_string}), *tables)
    direct.ensure_tables()
    return proxied, direct


def archive_shows(arc: Archive, emulator, call_id: str) -> tuple[str, dict]:
    """What an auditor reads, checked: one row per event, in order, chained; every event the service
    sent while a socket was open is there (one session.created per socket)."""
    events = list(arc.read_events(call_id))
    assert [e.seq for e in events] == list(range(len(events)))
    assert len({e.event_id for e in events}) == len(events), "a duplicate row"
    report = verify_call(arc, call_id)
    assert report.ok, report.problems
    types = [e.event_type for e in events]
    gaps = [json.loads(e.payload)["reason"] for e in events if e.event_type == "listener.gap"]
    service = sum(e.source == "service" for e in events)
    missing = emulator_events(emulator, call_id) + types.count("session.created") - service
    SEEN.extend(json.dumps(e.__dict__, default=str) for e in events)
    SEEN.append(json.dumps(arc.find_session(call_id) or {}, default=str))
    text = f"{service} events, {missing} missing, verifies"
    text += f"; gap: {', '.join(gaps)}" if gaps else "; no gap"
    return text, {"missing": missing, "gaps": gaps, "turns": types.count("response.done")}


@pytest.mark.parametrize("fault", list(SIDEBAND_CONNECT))
def test_sideband_connect(emulator, archive, upstream, settings, swept, fault):
    call_id = new_call(emulator)
    opened = emulator.stats()["sideband_connections"]
    emulator.set_fault("sideband", times=1, **SIDEBAND_CONNECT[fault])
    t, box = run_in_thread(listener(message(call_id), archive, upstream, settings))
    if fault == "404":  # the service says the call does not exist: nothing to record
        t.join(30)
        result = box["result"]
        ROWS.append(("sideband connect", fault, "ended (call gone), no retry", "no", "session row only: ended"))
        assert (result.outcome, result.end_reason) == ("ended", "ended")
        assert list(archive.read_events(call_id)) == []
        end_call(emulator, call_id)
        return
    wait_attached(archive, call_id, timeout=30)
    script(emulator, call_id, 1)
    end_call(emulator, call_id)
    t.join(30)
    assert "error" not in box, box.get("error")
    assert (box["result"].outcome, box["result"].end_reason) == ("ended", "ended")
    shows, seen = archive_shows(archive, emulator, call_id)
    tries = emulator.stats()["sideband_connections"] - opened
    ROWS.append(("sideband connect", fault, "attached, call recorded", f"yes ({tries} socket opened after it)", shows))
    assert seen["missing"] == 0 and seen["gaps"] == [] and seen["turns"] == 1


def test_sideband_connect_refused(archive, upstream, settings, swept, emulator):
    call_id = new_call(emulator)
    closed = f"ws://127.0.0.1:{free_port()}"  # nothing listens there
    handed = []
    lst = listener(message(call_id), archive, upstream, settings, time_box=2, handover=handed.append)
    lst.dial.url = lst.dial.url.replace(settings.websocket_endpoint, closed)
    result = lst.run()
    end_call(emulator, call_id)
    assert result.outcome == "handed_over" and len(handed) == 1  # the next listener tries again
    session = archive.find_session(call_id)
    assert not session.get("attached_at") and session["end_reason"] == "time_box"
    ROWS.append(
        (
            "sideband connect",
            "refused connection",
            "retried until the time box, then handed over (strict mode: hung up at ATTACH_LIMIT_SECONDS)",
            "yes (backoff 0.2 to 5 s)",
            "session row not attached; `listener.handover`",
        )
    )


def test_sideband_mid_call_drop(emulator, archive, upstream, settings, swept):
    call_id = new_call(emulator)
    emulator.set_fault("sideband", drop_after=5, times=1)  # the socket dies with no close frame
    sidebands = sideband_connections(emulator)
    t, box = run_in_thread(listener(message(call_id), archive, upstream, settings))
    wait_attached(archive, call_id)
    script(emulator, call_id, 1)
    wait_for(lambda: sideband_connections(emulator) >= sidebands + 2, 10, "the listener reconnected")
    script(emulator, call_id, 1)
    end_call(emulator, call_id)
    t.join(30)
    assert "error" not in box, box.get("error")
    shows, seen = archive_shows(archive, emulator, call_id)
    ROWS.append(("sideband mid-call", "dropped, no close frame", "reconnected, call goes on", "yes", shows))
    assert seen["gaps"] == ["socket dropped"] and seen["turns"] >= 1


def wait_for(predicate, timeout: float, what: str):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        got = predicate()
        if got:
            return got
        time.sleep(0.05)
    raise AssertionError(f"{what} not met within {timeout} s")


@pytest.mark.parametrize("fault", list(TABLE_WRITE))
def test_table_write(emulator, archives, proxy, upstream, settings, swept, fault):
    proxied, arc = archives
    call_id = new_call(emulator)
    msg = message(call_id)
    t, box = run_in_thread(listener(msg, proxied, upstream, settings))
    wait_attached(arc, call_id)
    wait_for(lambda: list(arc.read_events(call_id)), 10, "session.created archived")
    kind, spec = TABLE_WRITE[fault]
    faulted = proxy.faulted
    proxy.set(kind, match="$batch", **spec)  # the next event write (an entity-group transaction)
    script(emulator, call_id, 1)
    wait_for(lambda: proxy.faulted > faulted, 10, "the fault applied")
    # the listener either rides the fault out (the turn gets archived) or fails the invocation
    wait_for(
        lambda: not t.is_alive() or any(e.event_type == "response.done" for e in arc.read_events(call_id)),
        30,
        "the turn archived or the invocation failed",
    )
    redelivered = False
    if not t.is_alive():
        assert isinstance(box.get("error"), ArchiveError), box
        proxy.clear()  # storage is back
        # the host puts the message back (visibilityTimeout 0): the next try resumes the call
        redelivered = True
        t, box = run_in_thread(listener(msg, proxied, upstream, settings, redelivered=True))
        wait_for(
            lambda: any(e.event_type == "listener.gap" for e in arc.read_events(call_id)), 20, "the resumed listener"
        )
    script(emulator, call_id, 1)
    end_call(emulator, call_id)
    t.join(30)
    assert "error" not in box, box.get("error")
    assert box["result"].end_reason == "ended"
    shows, seen = archive_shows(arc, emulator, call_id)
    if redelivered:
        outcome, retried = "invocation fails (ArchiveError); the queue's retry resumes", "by the queue (dequeue 2)"
        assert seen["gaps"] == ["redelivered"]
    else:
        outcome, retried = "write retried, call goes on", "yes (the SDK's policy, then the writer's, within 10 s)"
        assert seen["missing"] == 0 and seen["gaps"] == [] and seen["turns"] == 2
    ROWS.append(("table write", fault, outcome, retried, shows))


def test_print_the_matrix():
    print("\n| step | fault | listener | retried | the archive shows |")
    print("|---|---|---|---|---|")
    for row in ROWS:
        print("| " + " | ".join(row) + " |")
    print(f"{len(ROWS)} cases")
    found = [secret for secret in ISSUED if any(secret in text for text in SEEN)]
    shaped = {s for text in SEEN for s in SECRET.findall(text)}
    print(
        f"secret hygiene: {len(SEEN)} log captures and archived rows; {len(ISSUED)} bearer tokens issued; "
        f"secrets found: {len(found) + len(shaped - ISSUED)}"
    )
    assert ISSUED and not found and not shaped
