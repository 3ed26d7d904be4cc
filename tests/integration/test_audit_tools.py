"""The auditor's tools on archives made by the real listener through the local host: listing a
period with filters, show, export in both formats (split payloads whole), verify against altered,
deleted, inserted and reordered rows, the audit API (keys, errors, paging) and retention."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta

import pytest
import requests
from azure.core.exceptions import ResourceNotFoundError
from azure.data.tables import UpdateMode

from local.processes import free_port
from local.testing.calls import end_and_wait, script, start_recorded_call
from local.testing.host import ROOT, HostProcess, gateway_settings
from realtime_gateway.archive.chain import link
from realtime_gateway.archive.codec import row_key
from realtime_gateway.archive.store import Archive
from realtime_gateway.archive.tables import table_service_from_env
from realtime_gateway.audit import main as audit_main
from realtime_gateway.audit.verify import verify_call

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
    r = a.get("sessions/rtc_nothere")
    assert r.status_code == 404 and r.json()["error"]["code"] == "call_not_found"
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
