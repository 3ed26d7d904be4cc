"""A conversation that outlives one session: `POST /api/connect?continue=` through the local host,
the emulator and Azurite. The successor keeps the conversation's active-call slot, its listener
replays the archived history before anything else (the emulator's reply proves the model saw it),
and the capability, the one-successor rule, MAX_CONVERSATION_SECONDS and the day's budgets hold. A reply the person
interrupted is replayed as far as it was heard. The auditor reads the conversation as one (`show`
and `report --conversation`: one clock, each call's start marked)."""

from __future__ import annotations

import contextlib
import io
import json
import secrets
import time
from datetime import UTC, datetime
from urllib.parse import urlsplit

import pytest
import urllib3
from azure.core.exceptions import ResourceNotFoundError
from azure.data.tables import TableServiceClient

from local.testing.calls import end_and_wait
from local.testing.host_process import wait_until
from local.testing.offer import OfferPeer
from realtime_gateway.archive.store import Archive
from realtime_gateway.archive.tables import table_service_from_env
from realtime_gateway.archive.turns import INTERRUPTED_MARK, Turn, call_turns, cut_heard
from realtime_gateway.audit.cli import main
from realtime_gateway.core import usage as u

BUDGET = 80  # tokens a day: more than one typed turn (about 50), less than two


def send(url: str, method: str = "GET", body: bytes | None = None, **headers):
    parts = urlsplit(url)
    pool = urllib3.HTTPConnectionPool(parts.hostname, parts.port, retries=False)
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    return pool.request(method, path, body=body, headers=headers, timeout=60)


def connect(stack, offer: str, query: str = "", **headers):
    headers = {"Content-Type": "application/sdp", **headers}
    return send(f"{stack.url}/api/connect{query}", "POST", offer.encode(), **headers)


def code(resp) -> str:
    return json.loads(resp.data)["error"]["code"]


def archive_of(stack) -> Archive:
    env = {"AzureWebJobsStorage": stack.settings["AzureWebJobsStorage"]}
    s = stack.settings
    return Archive(table_service_from_env(env), s["ARCHIVE_EVENTS_TABLE"], s["ARCHIVE_SESSIONS_TABLE"])


def say(stack, call_id: str, text: str) -> None:
    r = send(
        f"{stack.emulator.url}/_emulator/calls/{call_id}/script",
        "POST",
        json.dumps({"responses": 1, "text": text}).encode(),
        **{"Content-Type": "application/json"},
    )
    assert r.status == 200, r.data


def state(stack, call_id: str) -> dict:
    return json.loads(send(f"{stack.url}/api/calls/{call_id}").data)


def words(archive: Archive, call_id: str) -> list[Turn]:
    """The call's turns, read from its archived events (the session row keeps counts only)."""
    return call_turns((rec.event_type, rec.event()) for rec in archive.read_events(call_id))


def replied(archive: Archive, call_id: str, text: str) -> bool:
    return any(text in t.text for t in words(archive, call_id) if t.role == "assistant" and not t.replayed)


def emulated_items(stack, call_id: str) -> list[dict]:
    """What the emulator's model has in its context for the call."""
    return json.loads(send(f"{stack.emulator.url}/_emulator/calls/{call_id}/conversation").data)["items"]


def test_a_successor_keeps_the_slot_and_replays_the_history(gateway_stack_factory, tmp_path):
    stack = gateway_stack_factory(MAX_ACTIVE_CALLS=1)
    archive = archive_of(stack)
    with OfferPeer() as first, OfferPeer() as second, OfferPeer() as third:
        one = connect(stack, first.offer)
        assert one.status == 201
        first.accept(one.data.decode(), wait_open=15)
        call1, cap1 = one.headers["x-call-id"], one.headers["x-call-capability"]
        assert one.headers["x-conversation-id"] == call1
        wait_until(lambda: state(stack, call1)["state"] == "attached", 20)
        say(stack, call1, "My name is Ada")
        wait_until(lambda: replied(archive, call1, "You said: My name is Ada"), 20)

        # only the call's creator may continue it
        refused = connect(stack, second.offer, f"?continue={call1}")
        assert (refused.status, code(refused)) == (401, "capability_required")
        refused = connect(stack, second.offer, f"?continue={call1}", **{"x-call-capability": cap1[::-1]})
        assert (refused.status, code(refused)) == (403, "capability_invalid")
        refused = connect(stack, second.offer, "?continue=rtc_nobody", **{"x-call-capability": cap1})
        assert (refused.status, code(refused)) == (404, "conversation_not_found")

        # the successor: admitted at MAX_ACTIVE_CALLS=1 because it keeps the conversation's slot
        two = connect(stack, second.offer, f"?continue={call1}", **{"x-call-capability": cap1})
        assert two.status == 201, two.data
        second.accept(two.data.decode(), wait_open=15)
        call2 = two.headers["x-call-id"]
        assert two.headers["x-conversation-id"] == call1 and two.headers["x-call-capability"] != cap1
        again = connect(stack, third.offer, f"?continue={call1}", **{"x-call-capability": cap1})
        assert (again.status, code(again)) == (409, "already_continued")

        ready = wait_until(lambda: state(stack, call2).get("history_ready_at") and state(stack, call2), 20)
        assert ready["conversation_id"] == call1
        say(stack, call2, "what did I say first?")
        wait_until(lambda: replied(archive, call2, "You first said: My name is Ada"), 20)

        # the page hangs the old call up; the slot stays with the conversation
        assert send(f"{stack.url}/api/calls/{call1}/hangup", "POST", **{"x-call-capability": cap1}).status == 200
        stack.host.wait_for_log(f"call {call1}: listener 0 done: ended")
        fresh = connect(stack, third.offer)
        assert (fresh.status, code(fresh)) == (429, "too_many_active_calls")
        ended = connect(stack, third.offer, f"?continue={call1}", **{"x-call-capability": cap1})
        assert (ended.status, code(ended)) == (409, "conversation_ended")

    rows = {c: archive.find_session(c) for c in (call1, call2)}
    assert rows[call1]["continued_by"] == call2 and rows[call2]["continues"] == call1
    assert rows[call2]["conversation_id"] == call1 and rows[call2]["slot"] == rows[call1]["slot"]
    # the successor's own turns are its own; the replayed ones are marked as such
    own = [t.text for t in words(archive, call2) if not t.replayed]
    assert "My name is Ada" not in own and "what did I say first?" in own
    assert rows[call2]["user_turns"] == 1 and "user_transcript" not in rows[call2]

    # the auditor reads one conversation: each call's chain and the links verified, every event exported
    stack.host.wait_for_log(f"call {call2}: listener 0 done: ended")
    storage = ["--connection-string", stack.settings["AzureWebJobsStorage"]]
    tables = [
        "--events-table",
        stack.settings["ARCHIVE_EVENTS_TABLE"],
        "--sessions-table",
        stack.settings["ARCHIVE_SESSIONS_TABLE"],
    ]
    assert audit(["verify", call2, *storage, *tables]) == (0, [f"OK {call1}", f"OK {call2}"])
    out = tmp_path / "conversation.jsonl"
    assert audit(["export", call1, "--conversation", "-o", str(out), *storage, *tables])[0] == 0
    exported = [json.loads(line) for line in out.read_text().splitlines()]
    counts = [sum(1 for _ in archive.read_events(c)) for c in (call1, call2)]
    assert len(exported) == sum(counts) and exported[0]["type"] == "session.created"
    replayed = [e for e in exported[counts[0] :] if e.get("type") == "conversation.item.added"]
    assert replayed[0]["item"]["id"] == "replay_0000"  # the second call's events follow the first's

    # show and report stitch the calls: one clock from the first call's first event, each start marked
    status, out = audit_out(["show", call2, "--conversation", *storage, *tables])
    assert status == 0 and out.startswith(f"Conversation {call1}: 2 call(s)")
    listing = out.split("Conversation (UTC time")[1].splitlines()[1:]
    starts = [n for n, line in enumerate(listing) if "--- call " in line]
    assert len(starts) == 2 and listing[starts[1]].endswith(f"--- call 2 of 2: {call2}, continues {call1} ---")
    offsets = [float(line.split("+")[1].split(" s")[0]) for line in listing if "+" in line]
    assert offsets == sorted(offsets) and offsets[starts[1]] > 0  # the second call goes on from the first
    assert "User: My name is Ada" in "\n".join(listing[: starts[1]])
    assert "User: what did I say first?" in "\n".join(listing[starts[1] :])
    page = tmp_path / "conversation.html"
    status, out = audit_out(["report", call1, "--conversation", "-o", str(page), *storage, *tables])
    html = page.read_text()
    assert status == 0 and "2 calls; chains and links verified" in out
    assert f"<h1>Conversation {call1}</h1>" in html and "all 2 calls verified" in html
    assert html.count('<li class="call">') == 2 and f"Call 2 of 2: {call2}, continues {call1}" in html


def test_an_interrupted_reply_is_replayed_as_it_was_heard(gateway_stack_factory):
    stack = gateway_stack_factory()
    archive = archive_of(stack)
    question = "Tell me about the sea and the sky above it and the ships that sail between them"
    with OfferPeer() as first, OfferPeer() as second:
        one = connect(stack, first.offer)
        assert one.status == 201
        first.accept(one.data.decode(), wait_open=15)
        call1, cap1 = one.headers["x-call-id"], one.headers["x-call-capability"]
        wait_until(lambda: state(stack, call1)["state"] == "attached", 20)
        say(stack, call1, question)  # spoken over the peer connection

        def archived(call_id: str, event_type: str):
            return next((e.event() for e in archive.read_events(call_id) if e.event_type == event_type), None)

        reply = wait_until(lambda: archived(call1, "response.output_audio_transcript.done"), 20)
        done = wait_until(lambda: archived(call1, "response.done"), 20)
        played = next(i for i in emulated_items(stack, call1) if i["id"] == reply["item_id"])["audio_ms"]
        estimated = done["response"]["usage"]["output_token_details"]["audio_tokens"] * 50
        # the person stops the reply halfway through (the browser truncates, as the Agents SDK does)
        end_ms = min(played, estimated) // 2
        first.send(
            {
                "type": "conversation.item.truncate",
                "item_id": reply["item_id"],
                "content_index": 0,
                "audio_end_ms": end_ms,
            }
        )
        cut = wait_until(lambda: archived(call1, "conversation.item.truncated"), 20)
        assert (cut["item_id"], cut["audio_end_ms"]) == (reply["item_id"], end_ms)

        two = connect(stack, second.offer, f"?continue={call1}", **{"x-call-capability": cap1})
        assert two.status == 201, two.data
        second.accept(two.data.decode(), wait_open=15)
        call2 = two.headers["x-call-id"]
        wait_until(lambda: state(stack, call2).get("history_ready_at"), 20)
        context = emulated_items(stack, call2)

    heard = cut_heard(reply["transcript"], end_ms, estimated)
    assert heard and len(heard) < len(reply["transcript"]) and reply["transcript"].startswith(heard)
    replayed = [(i["role"], i["text"]) for i in context if i["id"].startswith("replay_")]
    assert replayed == [("user", question), ("assistant", heard + INTERRUPTED_MARK)]
    assert "ships" not in replayed[1][1]  # the unheard end of the reply never reaches the successor


def audit_out(argv: list[str]) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(argv)
    return code, out.getvalue()


def audit(argv: list[str]) -> tuple[int, list[str]]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(argv)
    return code, [line.split(":")[0] for line in out.getvalue().splitlines() if line.startswith("OK ")]


def test_a_conversation_past_its_limit_is_not_continued(gateway_stack_factory):
    stack = gateway_stack_factory(MAX_CONVERSATION_SECONDS=10, **{"AzureWebJobs.call_listener.Disabled": "true"})
    with OfferPeer() as first, OfferPeer() as second:
        one = connect(stack, first.offer)
        assert one.status == 201
        started = time.time()
        wait_until(lambda: time.time() - started > 10.5, 15)
        late = connect(
            stack,
            second.offer,
            f"?continue={one.headers['x-call-id']}",
            **{"x-call-capability": one.headers["x-call-capability"]},
        )
        assert (late.status, code(late)) == (409, "conversation_too_long")
        # refused before any mint and before the claim: the call may still be continued later by nobody
        assert not (archive_of(stack).find_session(one.headers["x-call-id"]) or {}).get("continued_by")


pytestmark = pytest.mark.timeout(180)


def test_a_rollover_is_charged_once_and_held_to_the_budget(gateway_stack_factory):
    """A successor keeps the conversation's slot but not its budget: the day's usage counts every
    call of the conversation once, and a spent budget refuses the next rollover (the page then
    says when the conversation ends) while the running call goes on (BUDGET_HANGUP_RUNNING=false;
    by default the spent budget hangs the running call up as well)."""
    table = f"limits{secrets.token_hex(4)}"
    stack = gateway_stack_factory(DAILY_TOKEN_BUDGET=BUDGET, LIMITS_TABLE=table, BUDGET_HANGUP_RUNNING="false")
    archive = archive_of(stack)
    tables = TableServiceClient.from_connection_string(stack.azurite.connection_string).get_table_client(table)
    day = datetime.now(UTC).strftime("%Y%m%d")

    def day_tokens() -> int:
        try:
            return u.budget_tokens(u.from_row(tables.get_entity(f"usage-{day}", "app")))
        except ResourceNotFoundError:
            return 0

    with OfferPeer() as first, OfferPeer() as second, OfferPeer() as third:
        one = connect(stack, first.offer)
        first.accept(one.data.decode(), wait_open=15)
        call1, cap1 = one.headers["x-call-id"], one.headers["x-call-capability"]
        wait_until(lambda: state(stack, call1)["state"] == "attached", 20)
        say(stack, call1, "My name is Ada")
        spent1 = wait_until(day_tokens, 20)  # charged while the call runs
        assert spent1 < BUDGET, f"one turn cost {spent1} tokens: raise BUDGET"

        two = connect(stack, second.offer, f"?continue={call1}", **{"x-call-capability": cap1})
        assert two.status == 201, two.data
        second.accept(two.data.decode(), wait_open=15)
        call2, cap2 = two.headers["x-call-id"], two.headers["x-call-capability"]
        wait_until(lambda: state(stack, call2).get("history_ready_at"), 20)
        assert send(f"{stack.url}/api/calls/{call1}/hangup", "POST", **{"x-call-capability": cap1}).status == 200
        say(stack, call2, "what did I say first?")
        wait_until(lambda: day_tokens() >= BUDGET, 20, what="the successor's turn charged to the same day")

        late = connect(stack, third.offer, f"?continue={call2}", **{"x-call-capability": cap2})
        assert (late.status, code(late)) == (429, "budget_exhausted")
        assert int(late.headers["Retry-After"]) > 0
        assert not (archive.find_session(call2) or {}).get("continued_by")  # free to be continued tomorrow
        assert state(stack, call2)["state"] == "attached"  # the running call goes on
        end_and_wait(stack.emulator.url, call2, archive)

    stack.host.wait_for_log(f"call {call2}: listener 0 done: ended")
    row = wait_until(lambda: (r := tables.get_entity(f"usage-{day}", "app")).get("calls") == 2 and r, 20)
    sessions = [u.from_row(archive.find_session(c)) for c in (call1, call2)]
    assert u.from_row(row) == u.add(*sessions)  # each call charged once, the rollover no twice
