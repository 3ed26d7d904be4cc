"""The local host's queue trigger and queue output binding, with the real host's semantics,
on the fixture app (tests/fixture_app: maxDequeueCount 3, visibilityTimeout 0, batchSize 4)."""

import base64
import time

import pytest

from local.testing.host_process import (
    FIXTURE_APP,
    b64,
    copy_app,
    drain_texts,
    fixture_settings,
    queue,
    records,
    wait_until,
)


def test_failing_handler_ends_in_poison_after_max_dequeue_count(host_factory, azurite, tmp_path):
    settings = fixture_settings(azurite, tmp_path)
    host = host_factory(FIXTURE_APP, settings)
    source = queue(azurite, settings["FAIL_QUEUE"], base64_text=True)
    sent = source.send_message("doomed message")

    poison = queue(azurite, settings["FAIL_QUEUE"] + "-poison")
    texts = drain_texts(poison, 1, timeout=30)

    seen = records(settings, "always_fails")
    assert [r["dequeue_count"] for r in seen] == [1, 2, 3]
    assert {r["id"] for r in seen} == {sent.id}
    assert all(r["body"] == "doomed message" and r["insertion_time"] and r["pop_receipt"] for r in seen)
    assert texts == [b64("doomed message")]  # copied as it was on the queue
    assert source.get_queue_properties().approximate_message_count == 0
    host.wait_for_log("reached MaxDequeueCount of 3")
    assert "Executed 'Functions.always_fails' (Failed" in host.logs


def test_message_that_is_not_base64_goes_straight_to_poison(host_factory, azurite, tmp_path):
    settings = fixture_settings(azurite, tmp_path)
    host = host_factory(FIXTURE_APP, settings)
    queue(azurite, settings["FAIL_QUEUE"]).send_message("plain text, not base64!")

    texts = drain_texts(queue(azurite, settings["FAIL_QUEUE"] + "-poison"), 1)
    assert texts == ["plain text, not base64!"]
    assert records(settings, "always_fails") == []  # the function never ran
    assert "not valid base64" in host.logs


def test_queue_output_binding_writes_base64(host_factory, azurite, tmp_path):
    settings = fixture_settings(azurite, tmp_path)
    host_factory(FIXTURE_APP, settings)
    queue(azurite, settings["RELAY_QUEUE"], base64_text=True).send_message("héllo")

    texts = drain_texts(queue(azurite, settings["OUT_QUEUE"]), 1)
    assert texts == [b64("relayed:héllo")]
    assert records(settings, "relay") == [{"fn": "relay", "body": "héllo", "dequeue_count": 1}]
    assert queue(azurite, settings["RELAY_QUEUE"]).get_queue_properties().approximate_message_count == 0


def test_http_queue_output_single_and_list(host_factory, azurite, tmp_path):
    import requests

    settings = fixture_settings(azurite, tmp_path)
    host = host_factory(FIXTURE_APP, settings)
    assert requests.post(host.url + "/api/emit", json="one").status_code == 202
    assert requests.post(host.url + "/api/emit", json=["a", "b", "c"]).status_code == 202

    texts = drain_texts(queue(azurite, settings["OUT_QUEUE"]), 4)
    assert sorted(base64.b64decode(t, validate=True).decode() for t in texts) == ["a", "b", "c", "one"]


def test_message_encoding_none(host_factory, azurite, tmp_path):
    settings = fixture_settings(azurite, tmp_path)
    host_factory(copy_app(tmp_path, messageEncoding="none"), settings)
    queue(azurite, settings["RELAY_QUEUE"]).send_message("plain text")

    assert drain_texts(queue(azurite, settings["OUT_QUEUE"]), 1) == ["relayed:plain text"]


def test_slow_handler_keeps_its_message_invisible(host_factory, azurite, tmp_path):
    # A 1 s lease renewed every 0.5 s while the handler runs 3 s: without renewal the message
    # would reappear after 1 s and this test's own polls would receive it.
    settings = fixture_settings(azurite, tmp_path, LOCAL_QUEUE_LEASE_SECONDS=1, SLOW_SECONDS=3)
    host = host_factory(FIXTURE_APP, settings)
    source = queue(azurite, settings["SLOW_QUEUE"], base64_text=True)
    source.send_message("take your time")
    wait_until(lambda: records(settings, "slow"), what="slow handler started")

    stolen = []
    while not any(r["event"] == "end" for r in records(settings, "slow")):
        stolen += list(source.receive_messages(max_messages=32, visibility_timeout=1))
        time.sleep(0.2)
    assert stolen == []
    host.wait_for_log("Executed 'Functions.slow' (Succeeded")
    wait_until(lambda: source.get_queue_properties().approximate_message_count == 0, 5, what="message deleted")
    assert [r["event"] for r in records(settings, "slow")] == ["start", "end"]


def test_function_timeout_fails_the_try_and_the_message_is_retried(host_factory, azurite, tmp_path):
    settings = fixture_settings(azurite, tmp_path, SLOW_SECONDS=8)  # functionTimeout is 4 s
    host = host_factory(FIXTURE_APP, settings)
    queue(azurite, settings["SLOW_QUEUE"], base64_text=True).send_message("too slow")

    host.wait_for_log("Timeout value of 00:00:04 exceeded by function 'Functions.slow'", timeout=15)
    wait_until(
        lambda: len([r for r in records(settings, "slow") if r["event"] == "start"]) >= 2,
        timeout=10,
        what="a second try",
    )
    assert "Executed 'Functions.slow' (Failed" in host.logs


def test_batch_runs_messages_concurrently_within_limits(host_factory, azurite, tmp_path):
    # batchSize 4 + newBatchThreshold 2: at most 6 at once; a pool of 8 threads is not the limit.
    settings = fixture_settings(azurite, tmp_path, SLOW_SECONDS=1.5, PYTHON_THREADPOOL_THREAD_COUNT=8)
    host_factory(FIXTURE_APP, settings)
    source = queue(azurite, settings["SLOW_QUEUE"], base64_text=True)
    for i in range(10):
        source.send_message(f"m{i}")
    wait_until(
        lambda: len([r for r in records(settings, "slow") if r["event"] == "end"]) == 10,
        timeout=30,
        what="10 messages handled",
    )

    events = sorted((r["t"], 1 if r["event"] == "start" else -1) for r in records(settings, "slow"))
    running, peak = 0, 0
    for _, delta in events:
        running += delta
        peak = max(peak, running)
    assert 2 <= peak <= 6


def test_start_up_fails_clearly_without_the_queue_settings(host_factory, azurite, tmp_path):
    settings = fixture_settings(azurite, tmp_path)
    del settings["SLOW_QUEUE"]
    with pytest.raises(RuntimeError, match="%SLOW_QUEUE% which is not set"):
        host_factory(FIXTURE_APP, settings)
    del settings["AzureWebJobsStorage"]
    settings["SLOW_QUEUE"] = "slow-x"
    with pytest.raises(RuntimeError, match="'AzureWebJobsStorage' .storage connection string. is not set"):
        host_factory(FIXTURE_APP, settings)


def test_stopping_the_host_releases_running_messages(host_factory, azurite, tmp_path):
    # The default 10-minute lease would otherwise hide the message from the next start for that long.
    settings = fixture_settings(azurite, tmp_path, SLOW_SECONDS=30)
    host = host_factory(FIXTURE_APP, settings)
    source = queue(azurite, settings["SLOW_QUEUE"], base64_text=True)
    source.send_message("interrupted")
    wait_until(lambda: records(settings, "slow"), what="slow handler started")
    assert host.stop() == 0
    got = wait_until(
        lambda: list(source.receive_messages(max_messages=1, visibility_timeout=30)), 3, what="message visible again"
    )
    assert got[0].dequeue_count == 2  # the host took it once; this is the second receive
