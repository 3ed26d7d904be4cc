"""The auditor's tools on archives made by the real listener through the local host: listing a
period with filters (usage and cost included), show, export in both formats (split payloads whole)
and its progress on a long call, verify against altered, deleted, inserted and reordered rows, the
audit API (keys, errors, paging), retention (whole calls over several transactions; a run cut
short reported as "being deleted" by every tool and finished by the next run) and a period's usage
per day from the limits table the real Limiter writes."""

from __future__ import annotations

import csv
import io
import json
import secrets
import time
from datetime import UTC, datetime, timedelta

import pytest
import requests
from azure.core.exceptions import ResourceNotFoundError
from azure.data.tables import UpdateMode

from local.processes import free_port
from local.testing.calls import end_and_wait, script, start_recorded_call
from local.testing.host_process import ROOT, HostProcess, gateway_settings, wait_until
from realtime_gateway.archive.chain import link
from realtime_gateway.archive.codec import row_key
from realtime_gateway.archive.retention import purge
from realtime_gateway.archive.store import INDEX_PREFIX, PURGE_PARTITION, Archive
from realtime_gateway.archive.tables import table_service_from_env
from realtime_gateway.archive.writer import ArchiveWriter
from realtime_gateway.audit import main as audit_main
from realtime_gateway.audit.verify import verify_call
from realtime_gateway.core import usage as u
from realtime_gateway.core.clock import day_of, utc_iso
from realtime_gateway.core.events import parse
from realtime_gateway.limits.limiter import Limiter
from realtime_gateway.services import LIMITS_STORAGE
from realtime_gateway.settings import PRICES, Limits

PAD = 70_000  # the first reply's *.done events exceed 64 KiB, so their payloads are split
NOW = datetime.now(UTC)


class Archived:
    def __init__(self, host: HostProcess, settings: dict, emulator, azurite):
        self.host, self.settings, self.emulator, self.azurite = host, settings, emulator, azurite
        self.url = host.url
        svc = table_service_from_env({"AzureWebJobsStorage": azurite.connection_string})
        self.archive = Archive(svc, settings["ARCHIVE_EVENTS_TABLE"], settings["ARCHIVE_SESSIONS_TABLE"])
        self.calls: dict[str, str] = {}
        self.base = [
            "--connection-string",
            azurite.connection_string,
            "--events-table",
            settings["ARCHIVE_EVENTS_TABLE"],
            "--sessions-table",
            settings["ARCHIVE_SESSIONS_TABLE"],
        ]

    def record(self, name: str, days_ago: int, origin: str, principal: dict, responses: int, pad=0, end="end"):
        """A call made by the emulator, archived by the listener through the host's queue trigger."""
        emu = self.emulator.url
        call_id = start_recorded_call(
            emu,
            self.azurite.connection_string,
            self.settings["LISTENER_QUEUE"],
            self.archive,
            days_ago,
            origin,
            principal,
            max_seconds=600 if end == "end" else 6,  # "limit": the listener hangs up at the deadline
        )
        script(emu, call_id, responses, pad)
        end_and_wait(emu if end == "end" else None, call_id, self.archive)
        # the listener writes the call's cost just after it marks the call ended
        wait_until(lambda: (self.archive.find_session(call_id) or {}).get("cost_usd"), 30, 0.1, "the call's cost")
        self.calls[name] = call_id
        return call_id

    def cli(self, capsys, *args: str) -> tuple[int, str]:
        code = audit_main(self.base + list(args))
        out = capsys.readouterr()
        return code, out.out + out.err

    def get(self, path: str, key: bool = True, **params):
        headers = {"x-functions-key": self.host.keys["host"]["default"]} if key else {}
        return requests.get(f"{self.url}/api/audit/{path}", params=params, headers=headers, timeout=30)


@pytest.fixture(scope="module")
def archived(emulator, azurite):
    port = free_port()
    settings = gateway_settings(emulator, azurite, port, AUDIT_API_ENABLED="true", ARCHIVE_RETENTION_DAYS="5")
    host = HostProcess(ROOT, settings, port=port)
    try:
        a = Archived(host, settings, emulator, azurite)
        alice = {"id": "p-alice", "name": "alice"}
        bob = {"id": "p-bob", "name": "bob"}
        a.record("old", 10, "https://a.example", alice, 1)
        a.record("recent", 3, "https://b.example", bob, 2, end="limit")
        a.record("today", 0, "https://a.example", alice, 3, pad=PAD)
        yield a
    finally:
        host.stop()


def _day(days_ago: int) -> str:
    return (NOW - timedelta(days=days_ago)).strftime("%Y-%m-%d")


def test_sessions_over_a_period_with_filters(archived, capsys):
    a = archived
    code, out = a.cli(capsys, "sessions", "--from", _day(12), "--to", _day(0))
    assert code == 0 and all(a.calls[n] in out for n in ("old", "recent", "today")), out
    assert "3 call(s)" in out
    code, out = a.cli(capsys, "sessions", "--from", _day(4), "--to", _day(0))
    assert a.calls["old"] not in out and a.calls["recent"] in out and a.calls["today"] in out
    code, out = a.cli(
        capsys, "sessions", "--from", _day(12), "--to", _day(0), "--origin", "https://a.example", "--json"
    )
    rows = [json.loads(line) for line in out.splitlines()]
    assert sorted(r["call_id"] for r in rows) == sorted([a.calls["old"], a.calls["today"]])
    today = next(r for r in rows if r["call_id"] == a.calls["today"])
    assert today["principal"] == "alice" and today["ended_by"] == "ended" and today["events"] > 30
    assert today["duration_s"] is not None and today["gaps"] == 0
    # usage and cost: the session row's token sums (three replies) and the cost the listener priced them at
    session = a.archive.find_session(a.calls["today"])
    assert today["tokens"] == session["usage_total_tokens"] > 0 and today["usage"]["usage_responses"] == 3
    assert today["cost_usd"] == u.cost_usd(u.from_row(session), PRICES) > 0 and today["purging_since"] is None
    code, out = a.cli(capsys, "sessions", "--from", _day(0), "--to", _day(0))
    header, line = out.splitlines()[0], next(ln for ln in out.splitlines() if a.calls["today"] in ln)
    assert "tokens" in header and "cost USD" in header
    assert f" {today['tokens']} " in line and f" {today['cost_usd']:.4f} " in line, line
    code, out = a.cli(capsys, "sessions", "--from", _day(12), "--to", _day(0), "--principal", "p-bob", "--json")
    assert [json.loads(line)["call_id"] for line in out.splitlines()] == [a.calls["recent"]]
    code, out = a.cli(capsys, "sessions", "--from", _day(12), "--to", _day(0), "--ended-by", "limit", "--json")
    assert [json.loads(line)["call_id"] for line in out.splitlines()] == [a.calls["recent"]]
    with pytest.raises(SystemExit) as bad:
        a.cli(capsys, "sessions", "--from", "2026-13-01", "--to", _day(0))
    assert bad.value.code == 2 and "from must be a UTC day" in capsys.readouterr().err


def test_show_reads_the_call_as_a_conversation(archived, capsys):
    a = archived
    code, out = a.cli(capsys, "show", a.calls["recent"])
    assert code == 0
    assert "ended_by    limit" in out and "principal   bob" in out
    convo = out.split("Conversation")[1].splitlines()
    said = [line for line in convo if "User:" in line or "Assistant:" in line]
    assert (
        len(said) == 4
        and "User: Scripted question 1" in said[0]
        and "Assistant: You said: Scripted question 1" in said[1]
    )
    assert "turn 1:" in out and "from user item to the first audio" in out
    code, out = a.cli(capsys, "show", "rtc_unknown")
    assert code == 3 and "no call rtc_unknown" in out


def test_export_in_both_formats_equals_the_archive(archived, capsys, tmp_path):
    a = archived
    call_id = a.calls["today"]
    records = list(a.archive.read_events(call_id))
    assert max(len(r.payload) for r in records) > 65_536  # split on more than one property
    raw_rows = list(a.archive.events.query_entities(f"PartitionKey eq '{call_id}'"))
    assert any("payload_1" in r for r in raw_rows)
    jsonl, csv_file = tmp_path / "c.jsonl", tmp_path / "c.csv"
    assert a.cli(capsys, "export", call_id, "-o", str(jsonl))[0] == 0
    assert a.cli(capsys, "export", call_id, "--format", "csv", "-o", str(csv_file))[0] == 0
    lines = jsonl.read_text(encoding="utf-8").splitlines()
    assert lines == [r.payload for r in records]
    assert [json.loads(line).get("event_id") or json.loads(line)["type"] for line in lines][0] == records[0].event_id
    rows = list(csv.DictReader(io.StringIO(csv_file.read_text(encoding="utf-8"), newline="")))
    assert [(int(r["seq"]), r["received_at"], r["type"], r["event_id"], r["payload"]) for r in rows] == [
        (r.seq, r.received_at, r.event_type, r.event_id, r.payload) for r in records
    ]
    assert len({r["event_id"] for r in rows}) == len(rows)  # exactly once
    folder = tmp_path / "period"
    code, out = a.cli(capsys, "export", "--from", _day(4), "--to", _day(0), "-o", str(folder))
    assert code == 0 and f"exported {call_id}" in out
    assert (folder / f"{call_id}.jsonl").read_text(encoding="utf-8").splitlines() == lines
    assert (folder / f"{a.calls['recent']}.jsonl").exists() and not (folder / f"{a.calls['old']}.jsonl").exists()
    sessions = [json.loads(s) for s in (folder / "sessions.jsonl").read_text().splitlines()]
    assert {s["call_id"] for s in sessions} == {call_id, a.calls["recent"]}


class Tamper:
    """Change rows of a call and put them back afterwards, so each case starts from an intact call."""

    def __init__(self, archive: Archive, call_id: str):
        self.events, self.call_id = archive.events, call_id
        self.saved = {r["RowKey"]: dict(r) for r in self.events.query_entities(f"PartitionKey eq '{call_id}'")}

    def row(self, seq: int) -> dict:
        return dict(self.saved[row_key(seq)])

    def put(self, entity: dict) -> None:
        self.events.upsert_entity(entity, mode=UpdateMode.REPLACE)

    def restore(self) -> None:
        for r in self.events.query_entities(f"PartitionKey eq '{self.call_id}'"):
            if r["RowKey"] not in self.saved:
                self.events.delete_entity(self.call_id, r["RowKey"])
        for entity in self.saved.values():
            self.put(entity)


def _moved(entity: dict, seq: int) -> dict:
    return {**entity, "RowKey": row_key(seq), "seq": seq}


def test_verify_names_the_altered_missing_inserted_and_reordered_row(archived, capsys):
    a = archived
    call_id = a.calls["recent"]
    code, out = a.cli(capsys, "verify", call_id)
    assert code == 0 and out.startswith(f"OK {call_id}"), out
    tamper = Tamper(a.archive, call_id)
    n = len([k for k in tamper.saved if "." not in k])

    def first(expect_kind: str, expect_row: str) -> str:
        report = verify_call(a.archive, call_id)
        assert not report.ok and report.first is not None, report.findings
        assert (report.first.kind, report.first.row) == (expect_kind, expect_row), report.findings
        code, out = a.cli(capsys, "verify", call_id)
        assert code == 1 and f"FAILED {call_id}: {expect_kind} row {expect_row}" in out, out
        return out

    try:
        altered = tamper.row(5)
        altered["payload"] = altered["payload"][:-1] + " }"  # the same JSON, other text: still altered
        tamper.put(altered)
        first("altered", row_key(5))
        tamper.restore()

        a.archive.events.delete_entity(call_id, row_key(7))
        first("missing", row_key(7))
        tamper.restore()

        # an inserted row with a correct link, and every later row moved one place on
        for seq in range(n - 1, 6, -1):
            tamper.put(_moved(tamper.row(seq), seq + 1))
        forged = tamper.row(7)
        forged.update(event_id="forged", payload='{"type":"forged"}', event_type="forged", chars=17)
        forged["hash"] = link(tamper.row(6)["hash"], 7, "forged", "forged", forged["received_at"], forged["payload"])
        tamper.put(forged)
        first("extra", row_key(7))
        tamper.restore()

        # two rows swapped, each keeping its place's sequence number
        r3, r4 = tamper.row(3), tamper.row(4)
        tamper.put({**r4, "RowKey": r3["RowKey"], "seq": 3})
        tamper.put({**r3, "RowKey": r4["RowKey"], "seq": 4})
        first("reordered", row_key(3))
        tamper.restore()

        # a row appended after the head, chained correctly: only the session's head shows it
        last = tamper.row(n - 1)
        tail = _moved(last, n)
        tail.update(
            event_id="appended",
            hash=link(last["hash"], n, "appended", last["event_type"], last["received_at"], last["payload"]),
        )
        tamper.put(tail)
        first("extra", row_key(n))
    finally:
        tamper.restore()
    code, out = a.cli(capsys, "verify", "--from", _day(12), "--to", _day(0))
    assert code == 0 and "3 of 3 call(s) intact" in out, out


def test_audit_api_needs_a_key_and_pages_a_large_session(archived):
    a = archived
    call_id = a.calls["today"]
    assert a.get("sessions", key=False, **{"from": _day(1), "to": _day(0)}).status_code == 401
    assert a.get(f"sessions/{call_id}", key=False).status_code == 401
    r = a.get("sessions", **{"from": _day(12), "to": _day(0), "page_size": 2})
    assert r.status_code == 200, r.text
    listed = r.json()["sessions"]
    assert len(listed) == 2 and r.json()["continuation"]
    r2 = a.get(
        "sessions", **{"from": _day(12), "to": _day(0), "page_size": 2, "continuation": r.json()["continuation"]}
    )
    listed += r2.json()["sessions"]
    assert sorted(s["call_id"] for s in listed) == sorted(a.calls.values()) and r2.json()["continuation"] is None
    records = list(a.archive.read_events(call_id))
    got, token, pages = [], None, 0
    while True:
        params = {"page_size": 10, **({"continuation": token} if token else {})}
        page = a.get(f"sessions/{call_id}", **params).json()
        pages += 1
        got += page["events"]
        assert (page["session"] is not None) == (pages == 1)
        token = page["continuation"]
        if not token:
            break
    assert pages == -(-len(records) // 10)
    assert [(e["seq"], e["payload"]) for e in got] == [(r.seq, r.payload) for r in records]
    v = a.get(f"sessions/{call_id}/verify").json()
    assert v["ok"] is True and v["rows"] == len(records)
    for params, code in (
        ({"from": "yesterday", "to": _day(0)}, "invalid_date"),
        ({"from": _day(0), "to": _day(3)}, "invalid_range"),
        ({"from": _day(40), "to": _day(0)}, "range_too_long"),
    ):
        r = a.get("sessions", **params)
        assert r.status_code == 400 and r.json()["error"]["code"] == code, r.text
    # the transcript, read from the events (the session row keeps counts only)
    recent = a.calls["recent"]
    t = a.get(f"sessions/{recent}/transcript").json()
    said = [(line["who"], line["text"]) for line in t["lines"] if line["who"] in ("user", "assistant")]
    assert t["calls"] == [recent] and len(said) == 4
    assert said[:2] == [("user", "Scripted question 1"), ("assistant", "You said: Scripted question 1")]
    assert a.get(f"sessions/{recent}/transcript", conversation="true").json()["lines"] == t["lines"]  # a call alone
    r = a.get(f"sessions/{recent}/transcript", conversation="maybe")
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_conversation"
    for path in ("sessions/rtc_nothere", "sessions/rtc_nothere/verify", "sessions/rtc_nothere/transcript"):
        r = a.get(path)
        assert r.status_code == 404 and r.json()["error"]["code"] == "call_not_found", (path, r.text)
    r = a.get(f"sessions/{call_id}", continuation="not-a-token")
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_continuation"


def test_audit_api_is_off_by_default(gateway_stack):
    r = requests.get(
        f"{gateway_stack.url}/api/audit/sessions",
        params={"from": _day(1), "to": _day(0)},
        headers={"x-functions-key": gateway_stack.keys["host"]["default"]},
        timeout=10,
    )
    assert r.status_code == 404 and r.json()["error"]["code"] == "audit_api_disabled"


def write_call(archive: Archive, events: int, days_ago: float = 0, delta: str = "w") -> str:
    """A call archived by the real ArchiveWriter (as the listener uses it): `events` transcript deltas."""
    started = time.time() - days_ago * 86400
    call_id = "rtc_" + secrets.token_hex(12)
    fields = {"state": "attached", "created_at": utc_iso(started), "origin": "https://w.example"}
    w = ArchiveWriter(archive, call_id, day_of(started), fields, flush_interval=0.05).start()
    for i in range(events):
        event = {"type": "response.output_audio_transcript.delta", "event_id": f"ev_{i}", "delta": f"{delta}{i} "}
        w.event(parse(json.dumps(event)), time.time())
    w.close({"state": "ended", "end_reason": "ended", "ended_at": utc_iso(time.time())})
    return call_id


@pytest.fixture
def own_archive(azurite):
    """Tables of their own, so these calls never meet the module's three."""
    svc = table_service_from_env({"AzureWebJobsStorage": azurite.connection_string})
    archive = Archive(svc, "ev" + secrets.token_hex(5), "se" + secrets.token_hex(5))
    archive.ensure_tables()
    cli = ["--connection-string", azurite.connection_string]
    cli += ["--events-table", archive.events.table_name, "--sessions-table", archive.sessions.table_name]
    return archive, cli


def run(capsys, base: list[str], *args: str) -> tuple[int, str, str]:
    code = audit_main(base + list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_a_long_export_reports_its_progress(own_archive, capsys, tmp_path):
    archive, base = own_archive
    call_id = write_call(archive, 2_050)
    records = list(archive.read_events(call_id))
    assert len(records) == 2_050
    out_file = tmp_path / "long.jsonl"
    code, _, err = run(capsys, base, "export", call_id, "-o", str(out_file))
    assert code == 0
    progress = [ln.strip() for ln in err.splitlines() if "M characters" in ln]
    chars = [sum(len(r.payload) for r in records[:n]) for n in (1000, 2000)]
    assert progress == [
        f"{call_id}: {n} events, {c / 1e6:.1f} M characters" for n, c in zip((1000, 2000), chars, strict=True)
    ]
    assert f"exported 2050 events of {call_id}" in err
    assert out_file.read_text(encoding="utf-8").splitlines() == [r.payload for r in records]


def _gone(archive: Archive, call_id: str, day: str) -> bool:
    rows = list(archive.events.query_entities(f"PartitionKey eq '{call_id}'", select=["RowKey"]))
    keys = [(day, call_id), (INDEX_PREFIX + call_id, "day"), (PURGE_PARTITION, call_id)]
    return not rows and all(
        not list(archive.sessions.query_entities(f"PartitionKey eq '{pk}' and RowKey eq '{rk}'")) for pk, rk in keys
    )


def test_retention_deletes_a_long_call_over_several_transactions(own_archive):
    archive, _ = own_archive
    old, recent = write_call(archive, 260, days_ago=10), write_call(archive, 5, days_ago=1)
    old_day = archive.find_session(old)["PartitionKey"]
    result = purge(archive, 5)
    assert result is not None and result.calls == [old] and result.event_rows == 260 and result.resumed == 0
    assert _gone(archive, old, old_day)
    assert verify_call(archive, recent).ok


def test_retention_has_no_call_cap_and_a_run_out_of_time_leaves_the_rest_to_the_next(own_archive):
    archive, _ = own_archive
    old = [write_call(archive, 2, days_ago=10) for _ in range(4)]
    stopped = purge(archive, 5, seconds=0)  # out of time at once: nothing deleted, the next run goes on
    assert stopped is not None and stopped.calls == [] and stopped.more
    result = purge(archive, 5)  # no cap on calls: every old call goes in one run
    assert result is not None and sorted(result.calls) == sorted(old) and not result.more


def test_a_deletion_cut_short_reads_as_being_deleted_and_the_next_run_finishes_it(own_archive, capsys):
    archive, base = own_archive
    call_id, intact = write_call(archive, 260, days_ago=10), write_call(archive, 3, days_ago=10)
    day = archive.find_session(call_id)["PartitionKey"]
    since = (NOW - timedelta(hours=1)).isoformat(timespec="seconds")
    # what a purge killed after its first transaction leaves: the marks, and 160 of 260 event rows
    archive.begin_delete(call_id, day, since)
    assert archive.delete_event_rows(call_id, max_batches=1) == 100
    first, last = _day(11), _day(9)

    code, out, _ = run(capsys, base, "sessions", "--from", first, "--to", last)
    line = next(ln for ln in out.splitlines() if call_id in ln)
    assert code == 0 and " PURGING " in line and f"being deleted by retention since {since}" in line, out
    code, out, _ = run(capsys, base, "sessions", "--from", first, "--to", last, "--json")
    listed = {json.loads(ln)["call_id"]: json.loads(ln) for ln in out.splitlines()}
    assert listed[call_id]["purging_since"] == since and listed[intact]["purging_since"] is None
    code, out, err = run(capsys, base, "show", call_id)
    assert code == 4 and f"BEING DELETED by retention since {since}" in out and "Conversation" not in out
    assert "being deleted by retention" in err
    code, out, _ = run(capsys, base, "verify", call_id)
    assert code == 4 and out.startswith(f"PURGING {call_id}: being deleted by retention since {since}"), out
    assert "(160 event rows left); not verified" in out and "FAILED" not in out and "missing" not in out
    code, out, _ = run(capsys, base, "verify", "--from", first, "--to", last)
    assert code == 4 and f"OK {intact}" in out and "FAILED" not in out, out
    assert "1 of 2 call(s) intact" in out and "1 being deleted by retention" in out
    code, out, _ = run(capsys, base, "verify", call_id, "--json")
    verdict = json.loads(out)
    assert (verdict["ok"], verdict["purging"], verdict["findings"], verdict["rows"]) == (False, since, [], 160)
    for args in (("export", call_id), ("report", call_id, "-o", "/dev/null")):
        code, _, err = run(capsys, base, *args)
        assert code == 4 and f"call {call_id} is being deleted by retention (since {since})" in err, args

    # the next run finishes it, even with retention switched off since; the intact call stays
    assert archive.pending_deletions() == [{"call_id": call_id, "day": day, "started_at": since}]
    result = purge(archive, 0)
    assert result is not None and (result.calls, result.event_rows, result.resumed) == ([call_id], 160, 1)
    assert _gone(archive, call_id, day) and archive.pending_deletions() == []
    assert verify_call(archive, intact).ok
    assert run(capsys, base, "show", call_id)[0] == 3
    assert purge(archive, 0) is None  # nothing left to finish


def test_the_audit_api_reports_a_call_being_deleted(archived):
    a = archived
    call_id = write_call(a.archive, 120)
    day = a.archive.find_session(call_id)["PartitionKey"]
    since = NOW.isoformat(timespec="seconds")
    try:
        a.archive.begin_delete(call_id, day, since)
        a.archive.delete_event_rows(call_id, max_batches=1)
        listed = a.get("sessions", **{"from": _day(0), "to": _day(0)}).json()["sessions"]
        assert next(s for s in listed if s["call_id"] == call_id)["purging_since"] == since
        r = a.get(f"sessions/{call_id}")
        assert r.status_code == 410 and r.json()["error"]["code"] == "call_being_deleted", r.text
        assert since in r.json()["error"]["message"]
        t = a.get(f"sessions/{call_id}/transcript")
        assert t.status_code == 410 and t.json()["error"]["code"] == "call_being_deleted", t.text
        v = a.get(f"sessions/{call_id}/verify")
        assert v.status_code == 200 and v.json() == {
            "call_id": call_id,
            "ok": False,
            "rows": 20,
            "head": None,
            "findings": [],
            "purging": since,
        }
    finally:
        purge(a.archive, 0)  # finishes it, and only it: retention is off in this call
    assert a.get(f"sessions/{call_id}").status_code == 404


def test_usage_per_day_from_the_limiters_rows(azurite, capsys, monkeypatch):
    table = "limits" + secrets.token_hex(4)
    clock = [datetime(2026, 11, 23, 12, 0, tzinfo=UTC).timestamp()]
    env = {"AzureWebJobsStorage": azurite.connection_string}
    limiter = Limiter(
        Limits(table=table, rate_per_minute=0, max_active_calls=0, daily_spend_usd=0),
        lambda: table_service_from_env(env, False, **LIMITS_STORAGE),
        lambda: clock[0],
    )
    first = {
        "responses": 2,
        "total_tokens": 1_000,
        "input_tokens": 400,
        "output_tokens": 600,
        "input_text_tokens": 100,
        "input_audio_tokens": 300,
        "output_text_tokens": 100,
        "output_audio_tokens": 500,
    }
    limiter.charge(first, 90.0, 1, "p-alice")
    limiter.charge({"responses": 1, "total_tokens": 50, "input_tokens": 50, "input_text_tokens": 50}, 30.0, 1, None)
    clock[0] += 2 * 86400  # 25 November; the 24th has no calls
    second = {
        "responses": 1,
        "total_tokens": 200,
        "input_tokens": 200,
        "input_audio_tokens": 200,
        "transcription_seconds": 30.0,
    }
    limiter.charge(second, 600.0, 1, "p-bob")
    base = ["--connection-string", azurite.connection_string]
    monkeypatch.setenv("LIMITS_TABLE", table)  # read as the app reads it

    code, out, _ = run(capsys, base, "usage", "--from", "2026-11-22", "--to", "2026-11-25", "--json")
    days = [json.loads(ln) for ln in out.splitlines()]
    assert code == 0 and [d["day"] for d in days] == ["2026-11-23", "2026-11-25"]
    d23, d25 = days
    assert (d23["calls"], d23["call_seconds"], d23["minutes"], d23["tokens"]) == (2, 120.0, 2.0, 1_050)
    assert d23["usage"]["input_text_tokens"] == 150 and d23["usage"]["output_audio_tokens"] == 500
    assert d23["cost_usd"] == u.cost_usd(
        u.add(dict(first), {"input_tokens": 50, "input_text_tokens": 50, "total_tokens": 50, "responses": 1}), PRICES
    )
    assert d25["usage"]["transcription_seconds"] == 30.0 and d25["cost_usd"] == u.cost_usd(second, PRICES) > 0

    code, out, _ = run(capsys, base, "usage", "--from", "20261123", "--to", "20261125")
    lines = out.splitlines()
    assert code == 0 and "whole app" in lines[0] and "cost USD" in lines[1] and "in audio" in lines[1]
    row23 = next(ln for ln in lines if ln.startswith("2026-11-23")).split()
    assert row23[:5] == ["2026-11-23", "2", "2.0", "1050", "150"] and row23[-1] == f"{d23['cost_usd']:.4f}"
    total = next(ln for ln in lines if ln.startswith("total")).split()
    assert total[1:4] == ["3", "12.0", "1250"] and total[-1] == f"{d23['cost_usd'] + d25['cost_usd']:.4f}"
    assert lines[-1] == "2 day(s) with usage"

    code, out, _ = run(
        capsys, base, "usage", "--from", "2026-11-01", "--to", "2026-11-30", "--principal", "alice", "--json"
    )
    alice = [json.loads(ln) for ln in out.splitlines()]
    assert code == 0 and [(d["day"], d["principal"], d["calls"], d["tokens"]) for d in alice] == [
        ("2026-11-23", "alice", 1, 1_000)
    ]
    assert run(capsys, base, "usage", "--from", "2026-11-24", "--to", "2026-11-24", "--json")[1] == ""
    code, _, err = run(capsys, base, "usage", "--from", "2026-11-23", "--to", "2026-11-23", "--limits-table", "nosuch1")
    assert code == 2 and "no limits table 'nosuch1'" in err


def test_retention_deletes_exactly_the_calls_past_the_limit(archived):
    a = archived
    old = a.calls["old"]
    assert any(True for _ in a.archive.read_events(old))
    fire = requests.post(
        f"{a.url}/admin/functions/archive_retention",
        json={"input": ""},
        headers={"x-functions-key": a.host.keys["host"]["default"]},
        timeout=10,
    )
    assert fire.status_code == 401  # the admin API takes the master key only
    fire = requests.post(
        f"{a.url}/admin/functions/archive_retention",
        json={"input": ""},
        headers={"x-functions-key": a.host.keys["master"]},
        timeout=10,
    )
    assert fire.status_code == 202
    a.host.wait_for_log("archive retention: 1 calls created before", timeout=30)
    assert a.archive.find_session(old) is None
    assert list(a.archive.read_events(old)) == []
    with pytest.raises(ResourceNotFoundError):
        a.archive.sessions.get_entity("idx-" + old, "day")
    for name in ("recent", "today"):
        assert verify_call(a.archive, a.calls[name]).ok
    assert f"deleted call {old}" in a.host.logs
