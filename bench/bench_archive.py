"""Archive on Azurite: entity-group transactions vs one upsert per event, in alternating rounds;
the same rows' transactions with nothing else to do (the writer's ceiling on this storage); and the
writer's event-to-durable delay (event handed to the writer -> its transaction committed) at a
steady --rate events/s.

    .venv/bin/python -m bench.bench_archive [--events 3000] [--rounds 3] [--rate 200] [--seconds 10]

Starts its own in-memory Azurite on free ports.
"""

from __future__ import annotations

import argparse
import json
import time
import uuid

from bench.common import Report, median, pct, pyplot
from local.azurite import start_azurite
from realtime_gateway.archive.call_log import CallLog
from realtime_gateway.archive.codec import transaction_batches
from realtime_gateway.archive.store import Archive
from realtime_gateway.archive.tables import table_service_from_env
from realtime_gateway.archive.writer import ArchiveWriter
from realtime_gateway.core.events import parse


def sample_events(n: int) -> list[str]:
    # the sideband's typical mix: many small transcript deltas, some larger item/response events
    out = []
    for i in range(n):
        if i % 20 == 19:
            out.append(
                json.dumps(
                    {
                        "type": "response.done",
                        "event_id": f"event_{i}",
                        "response": {"id": "resp_1", "output": [{"text": "x" * 1500}]},
                    }
                )
            )
        else:
            out.append(
                json.dumps(
                    {
                        "type": "response.output_audio_transcript.delta",
                        "event_id": f"event_{i}",
                        "response_id": "resp_1",
                        "item_id": "item_1",
                        "delta": "word ",
                    }
                )
            )
    return out


def batched(archive: Archive, events: list[str]) -> float:
    call_id = "rtc_batched_" + uuid.uuid4().hex[:8]
    t0 = time.perf_counter()
    w = ArchiveWriter(archive, call_id, "20260101", {"state": "attached"}).start()
    for raw in events:
        w.event(parse(raw), time.time())
    w.close({"state": "ended"})
    elapsed = time.perf_counter() - t0
    assert sum(1 for _ in archive.read_events(call_id)) == len(events)
    return len(events) / elapsed


def transactions_only(archive: Archive, events: list[str]) -> float:
    """The rows the writer would write, built beforehand: only the transactions are timed."""
    log = CallLog("rtc_raw_" + uuid.uuid4().hex[:8], 0)
    rows = [r for raw in events for r in log.event(parse(raw), time.time())]
    t0 = time.perf_counter()
    for batch in transaction_batches(rows):
        archive.write_entities(batch)
    return len(events) / (time.perf_counter() - t0)


def single(archive: Archive, events: list[str]) -> float:
    call_id = "rtc_single_" + uuid.uuid4().hex[:8]
    t0 = time.perf_counter()
    for seq, raw in enumerate(events):
        ev = json.loads(raw)
        archive.events.upsert_entity(
            {
                "PartitionKey": call_id,
                "RowKey": f"{seq:010d}",
                "seq": seq,
                "event_id": ev["event_id"],
                "event_type": ev["type"],
                "received_at": "2026-01-01T00:00:00+00:00",
                "payload": raw,
            }
        )
    return len(events) / (time.perf_counter() - t0)


def durable_delays(archive: Archive, rate: float, seconds: float) -> list[float]:
    """ms from writer.event() to the end of the transaction that holds the event, at `rate`/s."""
    committed: dict[str, float] = {}
    write = archive.write_entities

    def timed_write(entities):
        write(entities)
        now = time.perf_counter()
        for e in entities:
            committed.setdefault(e["event_id"], now)

    archive.write_entities = timed_write  # type: ignore[method-assign]
    events = sample_events(int(rate * seconds))
    handed: dict[str, float] = {}
    w = ArchiveWriter(archive, "rtc_durable_" + uuid.uuid4().hex[:8], "20260101", {"state": "attached"}).start()
    t0 = time.perf_counter()
    for i, raw in enumerate(events):
        time.sleep(max(0.0, t0 + i / rate - time.perf_counter()))
        handed[json.loads(raw)["event_id"]] = time.perf_counter()
        w.event(parse(raw), time.time())
    w.close({"state": "ended"})
    archive.write_entities = write  # type: ignore[method-assign]
    return [(committed[k] - t) * 1000 for k, t in handed.items()]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--events", type=int, default=3000, help="events per path and round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--rate", type=float, default=200.0, help="events/s for the event-to-durable delay")
    p.add_argument("--seconds", type=float, default=10.0)
    args = p.parse_args()
    report = Report("archive")
    az = start_azurite()
    try:
        svc = table_service_from_env({"AzureWebJobsStorage": az.connection_string})
        archive = Archive(svc, "benchev" + uuid.uuid4().hex[:6], "benchse" + uuid.uuid4().hex[:6])
        archive.ensure_tables()
        events = sample_events(args.events)
        single(archive, events[:50])  # warm both paths up
        rates: dict[str, list[float]] = {"batched": [], "single": [], "raw": []}
        for _ in range(args.rounds):  # alternating: the machine's load falls on every path alike
            rates["batched"].append(batched(archive, events))
            rates["single"].append(single(archive, events))
            rates["raw"].append(transactions_only(archive, events))
        delays = durable_delays(archive, args.rate, args.seconds)
    finally:
        az.stop()
    b, s, raw = (median(rates[k]) for k in ("batched", "single", "raw"))
    report.line(f"events: {len(events)} per path, {args.rounds} alternating rounds (medians)")
    report.line(f"batched (entity-group transactions, writer thread): {b:,.0f} events/s")
    report.line(f"one upsert per event:                               {s:,.0f} events/s")
    report.line(
        f"the same transactions, rows built beforehand:       {raw:,.0f} events/s "
        f"(the writer reaches {b / raw:.0%} of what this storage takes)"
    )
    report.target(
        "archive at least 4x the single-upsert rate", b / s >= 4, f"{b / s:.1f}x ({b:,.0f} vs {s:,.0f} events/s)"
    )
    report.figure(f"event -> durable at {args.rate:.0f} events/s for {args.seconds:.0f} s", delays)
    report.line(f"event -> durable p50 {pct(delays, 50):.0f} ms, p99 {pct(delays, 99):.0f} ms")
    report.target(
        f"event-to-durable p99 under 1 s at {args.rate:.0f} events/s",
        pct(delays, 99) < 1000,
        f"p99 {pct(delays, 99):.0f} ms",
    )
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.hist(delays, bins=40)
    ax.set_xlabel(f"event -> durable (ms) at {args.rate:.0f} events/s")
    ax.set_ylabel("events")
    report.chart("durable", fig)
    report.save()


if __name__ == "__main__":
    main()
