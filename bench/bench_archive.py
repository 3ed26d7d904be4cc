"""Archive throughput on Azurite: entity-group transactions vs one upsert per event, same run.

    .venv/bin/python -m bench.bench_archive [--events 3000]

Starts its own in-memory Azurite on free ports; prints events/s for both and the ratio.
"""

from __future__ import annotations

import argparse
import json
import time
import uuid

from local.azurite import start_azurite
from realtime_gateway.archive.store import Archive
from realtime_gateway.archive.tables import table_service_from_env
from realtime_gateway.archive.writer import ArchiveWriter


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
        w.event(raw, time.time())
    w.close({"state": "ended"})
    elapsed = time.perf_counter() - t0
    assert sum(1 for _ in archive.read_events(call_id)) == len(events)
    return len(events) / elapsed


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


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--events", type=int, default=3000)
    args = p.parse_args()
    az = start_azurite()
    try:
        svc = table_service_from_env({"AzureWebJobsStorage": az.connection_string})
        archive = Archive(svc, "benchev" + uuid.uuid4().hex[:6], "benchse" + uuid.uuid4().hex[:6])
        archive.ensure_tables()
        events = sample_events(args.events)
        single(archive, events[:50])  # warm both paths up
        b = batched(archive, events)
        s = single(archive, events)
        print(f"events: {len(events)}")
        print(f"batched (entity-group transactions, writer thread): {b:,.0f} events/s")
        print(f"one upsert per event:                               {s:,.0f} events/s")
        print(f"ratio batched / single: {b / s:.1f}x")
    finally:
        az.stop()


if __name__ == "__main__":
    main()
